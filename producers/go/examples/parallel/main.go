// Command parallel emits one request with three parallel branches to Kafka:
//
//	NODEMETER_KAFKA_BOOTSTRAP=127.0.0.1:19092 go run ./examples/parallel TOPIC REQUEST_ID
//
// The connection comes from the environment (nodemeter.ConfigFromEnv: the
// bootstrap, TLS and SASL as for the Python SDK); TOPIC replaces the default.
// tests/integration/test_go_sdk.py runs it and reads the records back.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	nodemeter "github.com/nodemeter/nodemeter/producers/go"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "parallel:", err)
		os.Exit(1)
	}
}

func run() error {
	if len(os.Args) != 3 {
		return fmt.Errorf("usage: parallel TOPIC REQUEST_ID")
	}
	cfg, err := nodemeter.ConfigFromEnv()
	if err != nil {
		return err
	}
	cfg.Topic = os.Args[1]
	meter, err := nodemeter.New(cfg)
	if err != nil {
		return err
	}
	ctx, req, err := meter.Request(context.Background(), "acme",
		nodemeter.WithRequestID(os.Args[2]), nodemeter.WithWorkflow("map-reduce"),
		nodemeter.WithAttributes(map[string]string{"lang": "go"}))
	if err != nil {
		return err
	}
	body := func() error {
		_, plan, err := nodemeter.Node(ctx, "plan")
		if err != nil {
			return err
		}
		if err := plan.Record(nodemeter.Meters{CpuMs: 3}); err != nil {
			return err
		}
		if err := plan.End(nil); err != nil {
			return err
		}
		fan := make([]func(context.Context) error, 3)
		for i := range fan {
			n := i + 1
			fan[i] = func(ctx context.Context) error {
				_, span, err := nodemeter.Node(ctx, "llm.summarize", nodemeter.WithModel("gpt-4o"))
				if err != nil {
					return err
				}
				resp := fmt.Sprintf(`{"model":"gpt-4o","usage":{"prompt_tokens":%d,"completion_tokens":%d,`+
					`"prompt_tokens_details":{"cached_tokens":%d}}}`, 100*n+n, 10*n, n)
				_, rerr := span.RecordOpenAI([]byte(resp))
				return errors.Join(rerr, span.End(rerr))
			}
		}
		if err := nodemeter.Parallel(ctx, fan...); err != nil {
			return err
		}
		_, merge, err := nodemeter.Node(ctx, "merge")
		if err != nil {
			return err
		}
		_, rerr := merge.RecordAnthropic([]byte(`{"model":"claude-sonnet-4","usage":{"input_tokens":50,` +
			`"output_tokens":5,"cache_read_input_tokens":20,"cache_creation_input_tokens":10}}`))
		return errors.Join(rerr, merge.End(rerr))
	}
	berr := body()
	if err := errors.Join(berr, req.End(berr)); err != nil {
		return err
	}
	// Longer than the producer's delivery timeout (30 s): a record that cannot be
	// delivered fails with its own error (a refused password) before the deadline.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return meter.Close(ctx)
}
