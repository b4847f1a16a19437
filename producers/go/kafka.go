package nodemeter

import (
	"context"
	"errors"
	"hash/crc32"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// KafkaConfig tunes the built-in franz-go producer. Idempotence and acks=all
// are franz-go's defaults and are not turned off here.
type KafkaConfig struct {
	// DeliveryTimeout bounds how long a record is retried (default 30 s); a
	// record still unacknowledged then is a DeliveryError from Flush.
	DeliveryTimeout time.Duration
	// Linger batches records for this long (default 5 ms).
	Linger time.Duration
	// Extra franz-go options, applied last (TLS, SASL, client id, ...).
	Opts []kgo.Opt
}

// CRC32Hasher maps a key to crc32(key) mod partitions (IEEE, unsigned): the
// partition librdkafka's consistent_random picks, and so the Python SDK's.
// franz-go's default (murmur2, as Kafka's Java client) would put the same key
// on another partition, and the worker dedupes per partition.
func CRC32Hasher(key []byte, partitions int) int {
	return int(crc32.ChecksumIEEE(key) % uint32(partitions))
}

// KafkaSink is the franz-go Sink: async produce, errors collected for Flush.
type KafkaSink struct {
	client *kgo.Client
	mu     sync.Mutex
	errs   []error
}

// NewKafkaSink builds an idempotent producer with the CRC32 partitioner.
func NewKafkaSink(brokers []string, cfg KafkaConfig) (*KafkaSink, error) {
	if cfg.DeliveryTimeout == 0 {
		cfg.DeliveryTimeout = 30 * time.Second
	}
	if cfg.Linger == 0 {
		cfg.Linger = 5 * time.Millisecond
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(brokers...),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(CRC32Hasher)),
		kgo.RecordDeliveryTimeout(cfg.DeliveryTimeout),
		kgo.ProducerLinger(cfg.Linger),
		kgo.ClientID("nodemeter-go/" + Version),
	}
	opts = append(opts, cfg.Opts...)
	client, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, err
	}
	return &KafkaSink{client: client}, nil
}

// Client is the underlying franz-go client.
func (k *KafkaSink) Client() *kgo.Client { return k.client }

// Send produces asynchronously; a failure is kept for Flush.
func (k *KafkaSink) Send(ctx context.Context, topic string, key, value []byte) error {
	rec := &kgo.Record{Topic: topic, Key: key, Value: value}
	k.client.Produce(ctx, rec, func(r *kgo.Record, err error) {
		if err != nil {
			k.mu.Lock()
			k.errs = append(k.errs, &DeliveryError{Topic: r.Topic, Key: r.Key, Value: r.Value, Err: err})
			k.mu.Unlock()
		}
	})
	return nil
}

// Flush waits for every produced record and returns the failures since the last Flush.
func (k *KafkaSink) Flush(ctx context.Context) error {
	ferr := k.client.Flush(ctx)
	k.mu.Lock()
	errs := k.errs
	k.errs = nil
	k.mu.Unlock()
	if ferr != nil {
		errs = append(errs, ferr)
	}
	return errors.Join(errs...)
}

// Close flushes until ctx ends, closes the client and returns every record it did
// not deliver, each a *DeliveryError (a Meter spools them): those that failed, and,
// when ctx ended first, those still buffered, which closing the client fails with
// kgo.ErrClientClosed. Give ctx more than DeliveryTimeout to see each record's own
// error (a refused password, say) rather than the context's.
func (k *KafkaSink) Close(ctx context.Context) error {
	err := k.Flush(ctx)
	k.client.Close()
	// Closing failed what was still buffered; a record leaves the count only once its
	// promise has run, so at zero every failure is in k.errs.
	for deadline := time.Now().Add(5 * time.Second); k.client.BufferedProduceRecords() > 0 &&
		time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	k.mu.Lock()
	errs := k.errs
	k.errs = nil
	k.mu.Unlock()
	return errors.Join(append([]error{err}, errs...)...)
}
