package nodemeter

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// Configuration from the environment, with the Python SDK's variable names and
// meanings (producers/nodemeter/meter.py MeterConfig, kafka_security.py):
//
//	NODEMETER_KAFKA_BOOTSTRAP   brokers, comma-separated (default 127.0.0.1:19092)
//	NODEMETER_TOPIC_PREFIX      Topic = prefix + "nodemeter.usage.v1"
//	NODEMETER_TENANTS           comma-separated allowlist (unknown_tenant otherwise)
//	NODEMETER_SPOOL_DIR         SpoolDir (no spool when unset: see README)
//	NODEMETER_KAFKA_CONFIG      a file of KEY=VALUE lines for the variables below
//	NODEMETER_KAFKA_SECURITY_PROTOCOL, _SASL_MECHANISM, _SASL_USERNAME,
//	_SASL_PASSWORD(_FILE), _SSL_CA_FILE, _SSL_CERT_FILE, _SSL_KEY_FILE,
//	_SSL_CHECK_HOSTNAME         TLS and SASL, as franz-go options in Kafka.Opts
//
// NODEMETER_KAFKA_SSL_KEY_PASSWORD(_FILE) is refused (Go's standard library reads no
// encrypted PKCS#8 key); NODEMETER_SCHEMA_REGISTRY_URL, NODEMETER_REPORT_SUCCESSES
// and NODEMETER_NATIVE do not apply to this SDK and are ignored.

// DefaultBootstrap is the bootstrap ConfigFromEnv uses without
// NODEMETER_KAFKA_BOOTSTRAP: the development broker (as the Python SDK).
const DefaultBootstrap = "127.0.0.1:19092"

// KafkaConfigFileVar names the file of KEY=VALUE lines for the security variables.
const KafkaConfigFileVar = "NODEMETER_KAFKA_CONFIG"

// ConfigError is a configuration the SDK refuses; Var names the variable. The
// message never holds a secret.
type ConfigError struct {
	Var     string
	Message string
}

func (e *ConfigError) Error() string { return "nodemeter: config: " + e.Message }

func confErr(v, format string, args ...any) *ConfigError {
	return &ConfigError{Var: v, Message: fmt.Sprintf(format, args...)}
}

// ConfigFromEnv builds a Config from the process environment (see the variables
// above). Fields the environment does not set keep their zero value: set them on
// the result before New (Producer, Clock, MaxFutureSkew, Kafka.Linger, ...).
func ConfigFromEnv() (Config, error) { return ConfigFromLookup(os.LookupEnv) }

// ConfigFromLookup is ConfigFromEnv reading variables through lookup.
func ConfigFromLookup(lookup func(string) (string, bool)) (Config, error) {
	var cfg Config
	bootstrap, ok := lookup("NODEMETER_KAFKA_BOOTSTRAP")
	if !ok {
		bootstrap = DefaultBootstrap
	}
	for b := range strings.SplitSeq(bootstrap, ",") {
		if b = strings.TrimSpace(b); b != "" {
			cfg.Brokers = append(cfg.Brokers, b)
		}
	}
	if len(cfg.Brokers) == 0 {
		return Config{}, confErr("NODEMETER_KAFKA_BOOTSTRAP", "NODEMETER_KAFKA_BOOTSTRAP is empty; give host:port[,host:port...]")
	}
	prefix, _ := lookup("NODEMETER_TOPIC_PREFIX")
	cfg.Topic = prefix + DefaultTopic
	if len(cfg.Topic) > 249 {
		return Config{}, confErr("NODEMETER_TOPIC_PREFIX", "topic %q is longer than Kafka's 249 characters", cfg.Topic)
	}
	if raw, _ := lookup("NODEMETER_TENANTS"); strings.TrimSpace(raw) != "" {
		cfg.Tenants = []string{} // non-nil: a list of only commas allows no tenant
		for t := range strings.SplitSeq(raw, ",") {
			if t = strings.TrimSpace(t); t != "" {
				cfg.Tenants = append(cfg.Tenants, t)
			}
		}
	}
	cfg.SpoolDir, _ = lookup("NODEMETER_SPOOL_DIR")
	sec, err := KafkaSecurityFromLookup(lookup)
	if err != nil {
		return Config{}, err
	}
	opts, err := sec.Opts()
	if err != nil {
		return Config{}, err
	}
	cfg.Kafka.Opts = opts
	return cfg, nil
}

// Security protocols and SASL mechanisms (the Python SDK's names).
var (
	securityProtocols = []string{"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"}
	saslMechanisms    = []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}
)

// The security variables, and those read from a file instead.
var (
	securityVars = []string{
		"NODEMETER_KAFKA_SECURITY_PROTOCOL", "NODEMETER_KAFKA_SASL_MECHANISM",
		"NODEMETER_KAFKA_SASL_USERNAME", "NODEMETER_KAFKA_SASL_PASSWORD",
		"NODEMETER_KAFKA_SSL_CA_FILE", "NODEMETER_KAFKA_SSL_CERT_FILE", "NODEMETER_KAFKA_SSL_KEY_FILE",
		"NODEMETER_KAFKA_SSL_KEY_PASSWORD", "NODEMETER_KAFKA_SSL_CHECK_HOSTNAME",
		"NODEMETER_KAFKA_SASL_PASSWORD_FILE", "NODEMETER_KAFKA_SSL_KEY_PASSWORD_FILE",
	}
	secretFileVars = map[string]string{
		"NODEMETER_KAFKA_SASL_PASSWORD_FILE":    "NODEMETER_KAFKA_SASL_PASSWORD",
		"NODEMETER_KAFKA_SSL_KEY_PASSWORD_FILE": "NODEMETER_KAFKA_SSL_KEY_PASSWORD",
	}
)

// KafkaSecurity is how the producer authenticates and protects its connection:
// the NODEMETER_KAFKA_* security variables, validated. Its String hides the password.
type KafkaSecurity struct {
	Protocol      string // PLAINTEXT (default), SSL, SASL_PLAINTEXT, SASL_SSL
	SASLMechanism string // PLAIN (default with SASL), SCRAM-SHA-256, SCRAM-SHA-512
	SASLUsername  string
	SASLPassword  string
	CAFile        string // PEM; empty: the system's trust store
	CertFile      string // client certificate (PEM) for mutual TLS, with KeyFile
	KeyFile       string
	// CheckHostname false: the broker's chain is still verified, its name is not.
	CheckHostname bool
}

// UsesSASL and UsesTLS say what the protocol implies.
func (s KafkaSecurity) UsesSASL() bool { return strings.HasPrefix(s.Protocol, "SASL_") }
func (s KafkaSecurity) UsesTLS() bool  { return s.Protocol == "SSL" || s.Protocol == "SASL_SSL" }

func (s KafkaSecurity) String() string {
	parts := []string{s.Protocol}
	if s.UsesSASL() {
		parts = append(parts, fmt.Sprintf("%s as %q", s.SASLMechanism, s.SASLUsername))
	}
	if s.UsesTLS() {
		if s.CAFile != "" {
			parts = append(parts, "CA "+s.CAFile)
		} else {
			parts = append(parts, "system CAs")
		}
		if s.CertFile != "" {
			parts = append(parts, "client cert "+s.CertFile)
		}
		if !s.CheckHostname {
			parts = append(parts, "hostname not checked")
		}
	}
	return strings.Join(parts, ", ")
}

// KafkaSecurityFromLookup reads the security variables through lookup, over the
// file NODEMETER_KAFKA_CONFIG names, if any (the environment wins), and validates
// them as the Python SDK does.
func KafkaSecurityFromLookup(lookup func(string) (string, bool)) (KafkaSecurity, error) {
	values := map[string]string{}
	where := "the environment"
	if path, _ := lookup(KafkaConfigFileVar); strings.TrimSpace(path) != "" {
		path = strings.TrimSpace(path)
		file, err := readKafkaConfigFile(path)
		if err != nil {
			return KafkaSecurity{}, err
		}
		values = file
		where = KafkaConfigFileVar + "=" + path + " and the environment"
	}
	for _, k := range securityVars {
		if v, ok := lookup(k); ok {
			values[k] = v
		}
	}
	for fileVar, v := range secretFileVars {
		path := strings.TrimSpace(values[fileVar])
		if path == "" {
			continue
		}
		if values[v] != "" {
			return KafkaSecurity{}, confErr(v, "set %s or %s (%s), not both", v, fileVar, where)
		}
		secret, err := readSecretFile(fileVar, path)
		if err != nil {
			return KafkaSecurity{}, err
		}
		values[v] = secret
	}
	get := func(k string) string { return strings.TrimSpace(values[k]) }
	s := KafkaSecurity{
		Protocol:      strings.ToUpper(get("NODEMETER_KAFKA_SECURITY_PROTOCOL")),
		SASLMechanism: strings.ReplaceAll(strings.ToUpper(get("NODEMETER_KAFKA_SASL_MECHANISM")), "_", "-"),
		SASLUsername:  get("NODEMETER_KAFKA_SASL_USERNAME"),
		SASLPassword:  values["NODEMETER_KAFKA_SASL_PASSWORD"], // a secret is taken as given
		CAFile:        get("NODEMETER_KAFKA_SSL_CA_FILE"),
		CertFile:      get("NODEMETER_KAFKA_SSL_CERT_FILE"),
		KeyFile:       get("NODEMETER_KAFKA_SSL_KEY_FILE"),
		CheckHostname: true,
	}
	if s.Protocol == "" {
		s.Protocol = "PLAINTEXT"
	}
	if !slices.Contains(securityProtocols, s.Protocol) {
		return KafkaSecurity{}, confErr("NODEMETER_KAFKA_SECURITY_PROTOCOL", "NODEMETER_KAFKA_SECURITY_PROTOCOL=%q (%s) is not one of %s",
			values["NODEMETER_KAFKA_SECURITY_PROTOCOL"], where, strings.Join(securityProtocols, ", "))
	}
	if s.SASLMechanism != "" && !slices.Contains(saslMechanisms, s.SASLMechanism) {
		return KafkaSecurity{}, confErr("NODEMETER_KAFKA_SASL_MECHANISM", "NODEMETER_KAFKA_SASL_MECHANISM=%q (%s) is not one of %s",
			values["NODEMETER_KAFKA_SASL_MECHANISM"], where, strings.Join(saslMechanisms, ", "))
	}
	switch flag := strings.ToLower(get("NODEMETER_KAFKA_SSL_CHECK_HOSTNAME")); flag {
	case "", "1", "true", "yes", "on":
	case "0", "false", "no", "off", "none":
		s.CheckHostname = false
	default:
		return KafkaSecurity{}, confErr("NODEMETER_KAFKA_SSL_CHECK_HOSTNAME", "NODEMETER_KAFKA_SSL_CHECK_HOSTNAME=%q (%s) must be true or false",
			values["NODEMETER_KAFKA_SSL_CHECK_HOSTNAME"], where)
	}
	if s.UsesSASL() {
		if s.SASLMechanism == "" {
			s.SASLMechanism = "PLAIN"
		}
		var missing []string
		if s.SASLUsername == "" {
			missing = append(missing, "NODEMETER_KAFKA_SASL_USERNAME")
		}
		if s.SASLPassword == "" {
			missing = append(missing, "NODEMETER_KAFKA_SASL_PASSWORD (or ..._PASSWORD_FILE)")
		}
		if missing != nil {
			return KafkaSecurity{}, confErr(missing[0], "NODEMETER_KAFKA_SECURITY_PROTOCOL=%s (%s) needs %s",
				s.Protocol, where, strings.Join(missing, " and "))
		}
	} else if given := setVars(values, "NODEMETER_KAFKA_SASL_MECHANISM", "NODEMETER_KAFKA_SASL_USERNAME", "NODEMETER_KAFKA_SASL_PASSWORD"); given != nil {
		return KafkaSecurity{}, confErr(given[0], "%s set (%s), but NODEMETER_KAFKA_SECURITY_PROTOCOL=%s uses no SASL (SASL_PLAINTEXT or SASL_SSL do)",
			strings.Join(given, ", "), where, s.Protocol)
	}
	if values["NODEMETER_KAFKA_SSL_KEY_PASSWORD"] != "" {
		return KafkaSecurity{}, confErr("NODEMETER_KAFKA_SSL_KEY_PASSWORD", "NODEMETER_KAFKA_SSL_KEY_PASSWORD (%s): the Go SDK reads no "+
			"encrypted private key; give NODEMETER_KAFKA_SSL_KEY_FILE unencrypted (openssl pkey -in KEY -out PLAIN)", where)
	}
	if !s.UsesTLS() {
		if given := setVars(values, "NODEMETER_KAFKA_SSL_CA_FILE", "NODEMETER_KAFKA_SSL_CERT_FILE", "NODEMETER_KAFKA_SSL_KEY_FILE"); given != nil {
			return KafkaSecurity{}, confErr(given[0], "%s set (%s), but NODEMETER_KAFKA_SECURITY_PROTOCOL=%s uses no TLS (SSL or SASL_SSL do)",
				strings.Join(given, ", "), where, s.Protocol)
		}
		return s, nil
	}
	if (s.CertFile == "") != (s.KeyFile == "") {
		return KafkaSecurity{}, confErr("NODEMETER_KAFKA_SSL_CERT_FILE", "NODEMETER_KAFKA_SSL_CERT_FILE and NODEMETER_KAFKA_SSL_KEY_FILE "+
			"go together (mutual TLS) (%s): one is set without the other", where)
	}
	if _, err := s.tlsConfig(where); err != nil { // a file that is not PEM fails now
		return KafkaSecurity{}, err
	}
	return s, nil
}

func setVars(values map[string]string, names ...string) []string {
	var out []string
	for _, n := range names {
		if strings.TrimSpace(values[n]) != "" {
			out = append(out, n)
		}
	}
	return out
}

// Opts are the franz-go options for s: kgo.DialTLSConfig with TLS, kgo.SASL with SASL.
func (s KafkaSecurity) Opts() ([]kgo.Opt, error) {
	var opts []kgo.Opt
	if s.UsesTLS() {
		tc, err := s.tlsConfig("")
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	if s.UsesSASL() {
		switch s.SASLMechanism {
		case "PLAIN", "":
			opts = append(opts, kgo.SASL(plain.Auth{User: s.SASLUsername, Pass: s.SASLPassword}.AsMechanism()))
		case "SCRAM-SHA-256":
			opts = append(opts, kgo.SASL(scram.Auth{User: s.SASLUsername, Pass: s.SASLPassword}.AsSha256Mechanism()))
		case "SCRAM-SHA-512":
			opts = append(opts, kgo.SASL(scram.Auth{User: s.SASLUsername, Pass: s.SASLPassword}.AsSha512Mechanism()))
		default:
			return nil, confErr("NODEMETER_KAFKA_SASL_MECHANISM", "NODEMETER_KAFKA_SASL_MECHANISM=%q is not one of %s",
				s.SASLMechanism, strings.Join(saslMechanisms, ", "))
		}
	}
	return opts, nil
}

func (s KafkaSecurity) tlsConfig(where string) (*tls.Config, error) {
	if where != "" {
		where = " (" + where + ")"
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if s.CAFile != "" {
		pemBytes, err := readConfFile("NODEMETER_KAFKA_SSL_CA_FILE", s.CAFile, where)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemBytes) {
			return nil, confErr("NODEMETER_KAFKA_SSL_CA_FILE", "NODEMETER_KAFKA_SSL_CA_FILE=%s%s holds no PEM certificate", s.CAFile, where)
		}
		tc.RootCAs = pool
	}
	if s.CertFile != "" {
		certPEM, err := readConfFile("NODEMETER_KAFKA_SSL_CERT_FILE", s.CertFile, where)
		if err != nil {
			return nil, err
		}
		keyPEM, err := readConfFile("NODEMETER_KAFKA_SSL_KEY_FILE", s.KeyFile, where)
		if err != nil {
			return nil, err
		}
		if blk, _ := pem.Decode(keyPEM); blk != nil && (blk.Type == "ENCRYPTED PRIVATE KEY" || blk.Headers["Proc-Type"] != "") {
			return nil, confErr("NODEMETER_KAFKA_SSL_KEY_FILE", "NODEMETER_KAFKA_SSL_KEY_FILE=%s%s is encrypted: the Go SDK reads "+
				"unencrypted keys only (openssl pkey -in KEY -out PLAIN)", s.KeyFile, where)
		}
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, confErr("NODEMETER_KAFKA_SSL_CERT_FILE", "NODEMETER_KAFKA_SSL_CERT_FILE=%s / NODEMETER_KAFKA_SSL_KEY_FILE=%s%s: "+
				"not a PEM certificate and its key (%v)", s.CertFile, s.KeyFile, where, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	if !s.CheckHostname {
		// verify the chain, not the name: crypto/tls does both or neither
		roots := tc.RootCAs
		tc.InsecureSkipVerify = true
		tc.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("nodemeter: the broker sent no certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter})
			return err
		}
	}
	return tc, nil
}

func readConfFile(v, path, where string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, confErr(v, "%s=%s%s: cannot read it (%v)", v, path, where, errors.Unwrap(err))
	}
	return b, nil
}

func readSecretFile(v, path string) (string, error) {
	b, err := readConfFile(v, path, "")
	if err != nil {
		return "", err
	}
	secret := strings.TrimRight(string(b), "\r\n")
	if secret == "" {
		return "", confErr(v, "%s=%s: the file is empty", v, path)
	}
	return secret, nil
}

// readKafkaConfigFile reads KEY=VALUE lines (# comments, blank lines, an optional
// "export", quotes around a value) of the security variables only. Errors name
// the file and line, never a value.
func readKafkaConfigFile(path string) (map[string]string, error) {
	where := KafkaConfigFileVar + "=" + path
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, confErr(KafkaConfigFileVar, "%s: cannot read it (%v)", where, errors.Unwrap(err))
	}
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if rest, ok := strings.CutPrefix(line, "export "); ok {
			line = strings.TrimLeft(rest, " \t")
		}
		key, value, ok := strings.Cut(line, "=")
		key = strings.TrimSpace(key)
		if !ok || key == "" {
			return nil, confErr(KafkaConfigFileVar, "%s: line %d is not KEY=VALUE", where, n)
		}
		if !slices.Contains(securityVars, key) {
			return nil, confErr(KafkaConfigFileVar, "%s: line %d: unknown key %q; the file takes %s "+
				"(NODEMETER_KAFKA_BOOTSTRAP and the rest stay in the environment)", where, n, key, strings.Join(securityVars, ", "))
		}
		value = strings.TrimSpace(value)
		if len(value) >= 2 && value[0] == value[len(value)-1] && (value[0] == '\'' || value[0] == '"') {
			value = value[1 : len(value)-1]
		}
		out[key] = value
	}
	if err := sc.Err(); err != nil {
		return nil, confErr(KafkaConfigFileVar, "%s: cannot read it (%v)", where, err)
	}
	return out, nil
}
