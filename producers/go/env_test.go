package nodemeter

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func lookupOf(env map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := env[k]; return v, ok }
}

func configErr(t *testing.T, err error, wantVar string, wantIn ...string) {
	t.Helper()
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("want *ConfigError for %s, got %v", wantVar, err)
	}
	if ce.Var != wantVar {
		t.Errorf("Var = %q, want %q (%v)", ce.Var, wantVar, err)
	}
	for _, s := range wantIn {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not say %q", err, s)
		}
	}
}

func TestConfigFromLookupDefaults(t *testing.T) {
	cfg, err := ConfigFromLookup(lookupOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.Brokers, []string{"127.0.0.1:19092"}) || cfg.Topic != "nodemeter.usage.v1" ||
		cfg.Tenants != nil || cfg.SpoolDir != "" || len(cfg.Kafka.Opts) != 0 {
		t.Fatalf("defaults: %+v", cfg)
	}
}

func TestConfigFromLookupValues(t *testing.T) {
	cfg, err := ConfigFromLookup(lookupOf(map[string]string{
		"NODEMETER_KAFKA_BOOTSTRAP": " k1:9092, k2:9093 ,",
		"NODEMETER_TOPIC_PREFIX":    "staging.",
		"NODEMETER_TENANTS":         " acme, globex ,,",
		"NODEMETER_SPOOL_DIR":       "/var/spool/nm",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.Brokers, []string{"k1:9092", "k2:9093"}) {
		t.Errorf("brokers %q", cfg.Brokers)
	}
	if cfg.Topic != "staging.nodemeter.usage.v1" || cfg.SpoolDir != "/var/spool/nm" {
		t.Errorf("topic %q spool %q", cfg.Topic, cfg.SpoolDir)
	}
	if !slices.Equal(cfg.Tenants, []string{"acme", "globex"}) {
		t.Errorf("tenants %q", cfg.Tenants)
	}

	// the allowlist is enforced by the meter built from it
	cfg.Sink = discardSink{}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := m.Request(context.Background(), "acme"); err != nil {
		t.Errorf("acme refused: %v", err)
	}
	if _, _, err := m.Request(context.Background(), "initech"); ReasonOf(err) != "unknown_tenant" {
		t.Errorf("initech: %v", err)
	}
}

func TestConfigFromLookupRefusals(t *testing.T) {
	_, err := ConfigFromLookup(lookupOf(map[string]string{"NODEMETER_KAFKA_BOOTSTRAP": " , "}))
	configErr(t, err, "NODEMETER_KAFKA_BOOTSTRAP", "empty")
	_, err = ConfigFromLookup(lookupOf(map[string]string{"NODEMETER_TOPIC_PREFIX": strings.Repeat("p", 240)}))
	configErr(t, err, "NODEMETER_TOPIC_PREFIX", "249")

	// a tenants list of commas only allows no tenant (Python: an empty frozenset)
	cfg, err := ConfigFromLookup(lookupOf(map[string]string{"NODEMETER_TENANTS": ",,"}))
	if err != nil || cfg.Tenants == nil || len(cfg.Tenants) != 0 {
		t.Fatalf("tenants %#v %v", cfg.Tenants, err)
	}
}

const secret = "s3cr3t-pa55"

func TestKafkaSecuritySASL(t *testing.T) {
	s, err := KafkaSecurityFromLookup(lookupOf(map[string]string{
		"NODEMETER_KAFKA_SECURITY_PROTOCOL": " sasl_plaintext ",
		"NODEMETER_KAFKA_SASL_MECHANISM":    "scram_sha_512",
		"NODEMETER_KAFKA_SASL_USERNAME":     "meter",
		"NODEMETER_KAFKA_SASL_PASSWORD":     secret,
	}))
	if err != nil {
		t.Fatal(err)
	}
	if s.Protocol != "SASL_PLAINTEXT" || s.SASLMechanism != "SCRAM-SHA-512" || s.SASLPassword != secret || s.UsesTLS() {
		t.Fatalf("%+v", s)
	}
	if strings.Contains(s.String(), secret) || !strings.Contains(s.String(), `SCRAM-SHA-512 as "meter"`) {
		t.Errorf("String() = %q", s.String())
	}
	if opts, err := s.Opts(); err != nil || len(opts) != 1 {
		t.Errorf("opts %d %v", len(opts), err)
	}

	// PLAIN is the default mechanism
	s, err = KafkaSecurityFromLookup(lookupOf(map[string]string{
		"NODEMETER_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "NODEMETER_KAFKA_SASL_USERNAME": "u",
		"NODEMETER_KAFKA_SASL_PASSWORD": secret,
	}))
	if err != nil || s.SASLMechanism != "PLAIN" {
		t.Fatalf("%v %v", s, err)
	}

	_, err = KafkaSecurityFromLookup(lookupOf(map[string]string{"NODEMETER_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}))
	configErr(t, err, "NODEMETER_KAFKA_SASL_USERNAME", "NODEMETER_KAFKA_SASL_USERNAME and NODEMETER_KAFKA_SASL_PASSWORD")
	_, err = KafkaSecurityFromLookup(lookupOf(map[string]string{"NODEMETER_KAFKA_SECURITY_PROTOCOL": "TLS"}))
	configErr(t, err, "NODEMETER_KAFKA_SECURITY_PROTOCOL", `"TLS"`, "PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL")
	_, err = KafkaSecurityFromLookup(lookupOf(map[string]string{
		"NODEMETER_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "NODEMETER_KAFKA_SASL_MECHANISM": "GSSAPI",
		"NODEMETER_KAFKA_SASL_USERNAME": "u", "NODEMETER_KAFKA_SASL_PASSWORD": secret,
	}))
	configErr(t, err, "NODEMETER_KAFKA_SASL_MECHANISM", "GSSAPI")
	if strings.Contains(err.Error(), secret) {
		t.Errorf("secret in %q", err)
	}
	// SASL settings without a SASL protocol: refused, the password not shown
	_, err = KafkaSecurityFromLookup(lookupOf(map[string]string{
		"NODEMETER_KAFKA_SASL_USERNAME": "u", "NODEMETER_KAFKA_SASL_PASSWORD": secret,
	}))
	configErr(t, err, "NODEMETER_KAFKA_SASL_USERNAME", "NODEMETER_KAFKA_SASL_USERNAME, NODEMETER_KAFKA_SASL_PASSWORD set", "PLAINTEXT uses no SASL")
	if strings.Contains(err.Error(), secret) {
		t.Errorf("secret in %q", err)
	}
}

func TestKafkaSecurityPasswordFileAndConfigFile(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte(secret+"\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := map[string]string{
		"NODEMETER_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "NODEMETER_KAFKA_SASL_USERNAME": "u",
		"NODEMETER_KAFKA_SASL_PASSWORD_FILE": pw,
	}
	s, err := KafkaSecurityFromLookup(lookupOf(base))
	if err != nil || s.SASLPassword != secret {
		t.Fatalf("password from file: %q %v", s.SASLPassword, err)
	}
	both := map[string]string{"NODEMETER_KAFKA_SASL_PASSWORD": "x"}
	for k, v := range base {
		both[k] = v
	}
	_, err = KafkaSecurityFromLookup(lookupOf(both))
	configErr(t, err, "NODEMETER_KAFKA_SASL_PASSWORD", "not both")
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base["NODEMETER_KAFKA_SASL_PASSWORD_FILE"] = empty
	_, err = KafkaSecurityFromLookup(lookupOf(base))
	configErr(t, err, "NODEMETER_KAFKA_SASL_PASSWORD_FILE", "empty")

	// the file: comments, export, quotes; the environment wins over it
	file := filepath.Join(dir, "kafka.env")
	text := "# broker credentials\n\nexport NODEMETER_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT\n" +
		"NODEMETER_KAFKA_SASL_USERNAME = 'file-user'\nNODEMETER_KAFKA_SASL_PASSWORD=\"" + secret + "\"\n" +
		"NODEMETER_KAFKA_SASL_MECHANISM=PLAIN\n"
	if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err = KafkaSecurityFromLookup(lookupOf(map[string]string{
		"NODEMETER_KAFKA_CONFIG": file, "NODEMETER_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if s.Protocol != "SASL_PLAINTEXT" || s.SASLUsername != "file-user" || s.SASLPassword != secret || s.SASLMechanism != "SCRAM-SHA-256" {
		t.Fatalf("%+v", s)
	}
	bad := filepath.Join(dir, "bad.env")
	if err := os.WriteFile(bad, []byte("NODEMETER_KAFKA_SECURITY_PROTOCOL=SSL\nNODEMETER_KAFKA_BOOTSTRAP=k:9092\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = KafkaSecurityFromLookup(lookupOf(map[string]string{"NODEMETER_KAFKA_CONFIG": bad}))
	configErr(t, err, "NODEMETER_KAFKA_CONFIG", "line 2", `"NODEMETER_KAFKA_BOOTSTRAP"`)
	_, err = KafkaSecurityFromLookup(lookupOf(map[string]string{"NODEMETER_KAFKA_CONFIG": filepath.Join(dir, "missing")}))
	configErr(t, err, "NODEMETER_KAFKA_CONFIG", "cannot read it")
}

// pki writes a CA and a broker certificate for name (and 127.0.0.1) signed by it.
type pki struct{ caFile, certFile, keyFile string }

func newPKI(t *testing.T, dir, name string) (pki, tls.Certificate) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA " + name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: name},
		DNSNames: []string{name}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	p := pki{filepath.Join(dir, name+"-ca.pem"), filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	for f, b := range map[string][]byte{p.caFile: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		p.certFile: certPEM, p.keyFile: keyPEM} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return p, cert
}

func TestKafkaSecurityTLSFiles(t *testing.T) {
	dir := t.TempDir()
	p, _ := newPKI(t, dir, "broker.test")
	s, err := KafkaSecurityFromLookup(lookupOf(map[string]string{
		"NODEMETER_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "NODEMETER_KAFKA_SASL_USERNAME": "u",
		"NODEMETER_KAFKA_SASL_PASSWORD": secret, "NODEMETER_KAFKA_SSL_CA_FILE": p.caFile,
		"NODEMETER_KAFKA_SSL_CERT_FILE": p.certFile, "NODEMETER_KAFKA_SSL_KEY_FILE": p.keyFile,
		"NODEMETER_KAFKA_SSL_CHECK_HOSTNAME": "False",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if !s.UsesTLS() || !s.UsesSASL() || s.CheckHostname || !strings.Contains(s.String(), "hostname not checked") {
		t.Fatalf("%+v", s)
	}
	if opts, err := s.Opts(); err != nil || len(opts) != 2 { // DialTLSConfig, SASL
		t.Fatalf("opts %d %v", len(opts), err)
	}

	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	ssl := func(kv ...string) map[string]string {
		m := map[string]string{"NODEMETER_KAFKA_SECURITY_PROTOCOL": "SSL"}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	_, err = KafkaSecurityFromLookup(lookupOf(ssl("NODEMETER_KAFKA_SSL_CA_FILE", notPEM)))
	configErr(t, err, "NODEMETER_KAFKA_SSL_CA_FILE", "holds no PEM certificate")
	_, err = KafkaSecurityFromLookup(lookupOf(ssl("NODEMETER_KAFKA_SSL_CA_FILE", filepath.Join(dir, "nope"))))
	configErr(t, err, "NODEMETER_KAFKA_SSL_CA_FILE", "cannot read it")
	_, err = KafkaSecurityFromLookup(lookupOf(ssl("NODEMETER_KAFKA_SSL_CERT_FILE", p.certFile)))
	configErr(t, err, "NODEMETER_KAFKA_SSL_CERT_FILE", "go together")
	_, err = KafkaSecurityFromLookup(lookupOf(ssl("NODEMETER_KAFKA_SSL_CERT_FILE", p.certFile, "NODEMETER_KAFKA_SSL_KEY_FILE", notPEM)))
	configErr(t, err, "NODEMETER_KAFKA_SSL_CERT_FILE", "not a PEM certificate and its key")
	enc := filepath.Join(dir, "enc.key")
	if err := os.WriteFile(enc, pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1}}), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = KafkaSecurityFromLookup(lookupOf(ssl("NODEMETER_KAFKA_SSL_CERT_FILE", p.certFile, "NODEMETER_KAFKA_SSL_KEY_FILE", enc)))
	configErr(t, err, "NODEMETER_KAFKA_SSL_KEY_FILE", "is encrypted")
	_, err = KafkaSecurityFromLookup(lookupOf(ssl("NODEMETER_KAFKA_SSL_KEY_PASSWORD", secret)))
	configErr(t, err, "NODEMETER_KAFKA_SSL_KEY_PASSWORD", "reads no encrypted private key")
	if strings.Contains(err.Error(), secret) {
		t.Errorf("secret in %q", err)
	}
	_, err = KafkaSecurityFromLookup(lookupOf(ssl("NODEMETER_KAFKA_SSL_CHECK_HOSTNAME", "maybe")))
	configErr(t, err, "NODEMETER_KAFKA_SSL_CHECK_HOSTNAME", "true or false")
	_, err = KafkaSecurityFromLookup(lookupOf(map[string]string{"NODEMETER_KAFKA_SSL_CA_FILE": p.caFile}))
	configErr(t, err, "NODEMETER_KAFKA_SSL_CA_FILE", "PLAINTEXT uses no TLS")
}

// handshake dials a TLS server presenting cert with the client config of s,
// naming the server "127.0.0.1" (not a name in the certificate).
func handshake(t *testing.T, s KafkaSecurity, cert tls.Certificate) error {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			_ = c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	tc, err := s.tlsConfig("")
	if err != nil {
		t.Fatal(err)
	}
	tc.ServerName = "127.0.0.1" // franz-go sets the broker's host here
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ln.Addr().String(), tc)
	if err == nil {
		c.Close()
	}
	return err
}

func TestKafkaSecurityCheckHostname(t *testing.T) {
	dir := t.TempDir()
	p, cert := newPKI(t, dir, "broker.test")
	other, _ := newPKI(t, dir, "other.test")
	trusted := KafkaSecurity{Protocol: "SSL", CAFile: p.caFile, CheckHostname: true}
	if err := handshake(t, trusted, cert); err == nil {
		t.Error("hostname checked: a certificate for broker.test must not pass for 127.0.0.1")
	}
	trusted.CheckHostname = false
	if err := handshake(t, trusted, cert); err != nil {
		t.Errorf("hostname not checked, trusted CA: %v", err)
	}
	// the chain is still verified: another CA's trust does not accept this certificate
	untrusted := KafkaSecurity{Protocol: "SSL", CAFile: other.caFile, CheckHostname: false}
	if err := handshake(t, untrusted, cert); err == nil {
		t.Error("hostname not checked, untrusted CA: the handshake must fail")
	}
}
