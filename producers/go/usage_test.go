package nodemeter

import (
	"context"
	"reflect"
	"testing"
)

func TestOpenAICountsCachedOnce(t *testing.T) {
	m, rec, _ := newRecordingMeter(t)
	ctx, root, _ := m.Request(context.Background(), "acme", WithRequestID("r"))
	_, span, _ := Node(ctx, "llm")
	chat := `{"model":"gpt-4o","usage":{"prompt_tokens":1200,"completion_tokens":300,"prompt_tokens_details":{"cached_tokens":800}}}`
	got, err := span.RecordOpenAI([]byte(chat))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, Meters{InputTokens: 400, OutputTokens: 300, CachedInputTokens: 800, APICalls: 1}) {
		t.Errorf("chat: %+v", got)
	}
	resp := `{"model":"o3","usage":{"input_tokens":100,"output_tokens":50,"input_tokens_details":{"cached_tokens":40}}}`
	if got, _ := span.RecordOpenAI([]byte(resp)); got.InputTokens != 60 || got.CachedInputTokens != 40 || got.OutputTokens != 50 {
		t.Errorf("responses API: %+v", got)
	}
	bad := `{"usage":{"prompt_tokens":10,"prompt_tokens_details":{"cached_tokens":11}}}`
	if _, err := span.RecordOpenAI([]byte(bad)); ReasonOf(err) != "invalid_quantity" {
		t.Errorf("cached > prompt: %v", err)
	}
	if _, err := span.RecordOpenAI([]byte(`{"usage":{"prompt_tokens":1.5}}`)); ReasonOf(err) != "invalid_quantity" {
		t.Errorf("float tokens: %v", err)
	}
	if _, err := span.RecordOpenAI([]byte(`{"model":"x"}`)); ReasonOf(err) != "missing_usage" {
		t.Errorf("no usage: %v", err)
	}
	_ = span.End(nil)
	_ = root.End(nil)
	if len(rec.events) != 2 || *rec.events[0].Model != "gpt-4o" || *rec.events[0].Provider != "openai" ||
		*rec.events[1].Model != "o3" {
		t.Errorf("events %+v", rec.events)
	}
}

func TestAnthropicCountsCachedOnce(t *testing.T) {
	got, err := MetersFromAnthropic(AnthropicUsage{InputTokens: 100, OutputTokens: 20,
		CacheReadInputTokens: 900, CacheCreationInputTokens: 50})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, Meters{InputTokens: 100, OutputTokens: 20, CachedInputTokens: 900, CacheWriteTokens: 50, APICalls: 1}) {
		t.Errorf("%+v", got)
	}
	if _, err := MetersFromAnthropic(AnthropicUsage{InputTokens: -1}); ReasonOf(err) != "negative_quantity" {
		t.Errorf("negative: %v", err)
	}
	m, rec, _ := newRecordingMeter(t)
	ctx, root, _ := m.Request(context.Background(), "acme", WithRequestID("r"))
	_, span, _ := Node(ctx, "llm", WithProvider("bedrock"))
	body := `{"model":"claude-sonnet-4","usage":{"input_tokens":10,"output_tokens":5,"cache_read_input_tokens":7}}`
	if _, err := span.RecordAnthropic([]byte(body)); err != nil {
		t.Fatal(err)
	}
	_ = span.End(nil)
	_ = root.End(nil)
	e := rec.events[0]
	if e.Meters.CachedInputTokens != 7 || e.Meters.InputTokens != 10 || *e.Provider != "bedrock" || *e.Model != "claude-sonnet-4" {
		t.Errorf("event %+v", e)
	}
}
