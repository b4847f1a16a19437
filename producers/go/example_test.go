package nodemeter_test

import (
	"context"
	"fmt"

	nodemeter "github.com/nodemeter/nodemeter/producers/go"
)

type countSink struct{ n int }

func (s *countSink) Send(context.Context, string, []byte, []byte) error { s.n++; return nil }
func (s *countSink) Flush(context.Context) error                        { return nil }
func (s *countSink) Close(context.Context) error                        { return nil }

// The README's example, with a Sink in place of the broker.
func ExampleMeter_Request() {
	sink := &countSink{}
	ctx := context.Background()
	body := []byte(`{"model":"gpt-4o","usage":{"prompt_tokens":120,"completion_tokens":30,` +
		`"prompt_tokens_details":{"cached_tokens":100}}}`)

	meter, _ := nodemeter.New(nodemeter.Config{Sink: sink})
	defer meter.Close(context.Background())
	ctx, req, _ := meter.Request(ctx, "acme", nodemeter.WithWorkflow("rag"))
	_, span, _ := nodemeter.Node(ctx, "llm.answer", nodemeter.WithModel("gpt-4o"))
	m, _ := span.RecordOpenAI(body)
	_ = span.End(nil)
	_ = req.End(nil)

	fmt.Println(m.InputTokens, m.CachedInputTokens, m.OutputTokens, sink.n)
	// Output: 20 100 30 2
}
