package nodemeter

import (
	"encoding/json"
)

// OpenAIUsage is the "usage" object of an OpenAI response: Chat Completions
// names (prompt_tokens, completion_tokens) or the Responses API's
// (input_tokens, output_tokens).
type OpenAIUsage struct {
	PromptTokens        *int64 `json:"prompt_tokens"`
	CompletionTokens    *int64 `json:"completion_tokens"`
	PromptTokensDetails *struct {
		CachedTokens int64 `json:"cached_tokens"`
	} `json:"prompt_tokens_details"`
	InputTokens        int64 `json:"input_tokens"`
	OutputTokens       int64 `json:"output_tokens"`
	InputTokensDetails *struct {
		CachedTokens int64 `json:"cached_tokens"`
	} `json:"input_tokens_details"`
}

// AnthropicUsage is the "usage" object of an Anthropic Messages response.
type AnthropicUsage struct {
	InputTokens              int64 `json:"input_tokens"`
	OutputTokens             int64 `json:"output_tokens"`
	CacheReadInputTokens     int64 `json:"cache_read_input_tokens"`
	CacheCreationInputTokens int64 `json:"cache_creation_input_tokens"`
}

func nonNegative(name string, v int64) error {
	if v < 0 {
		return bad("negative_quantity", "usage field %s must not be negative, got %d", name, v)
	}
	return nil
}

// MetersFromOpenAI counts each token once: OpenAI's prompt tokens include the
// cached ones, so input = prompt - cached and cached_input = cached. Output
// tokens already include reasoning tokens. One response is one API call.
func MetersFromOpenAI(u OpenAIUsage) (Meters, error) {
	var prompt, output, cached int64
	if u.PromptTokens != nil || u.CompletionTokens != nil {
		if u.PromptTokens != nil {
			prompt = *u.PromptTokens
		}
		if u.CompletionTokens != nil {
			output = *u.CompletionTokens
		}
		if u.PromptTokensDetails != nil {
			cached = u.PromptTokensDetails.CachedTokens
		}
	} else {
		prompt, output = u.InputTokens, u.OutputTokens
		if u.InputTokensDetails != nil {
			cached = u.InputTokensDetails.CachedTokens
		}
	}
	for _, f := range []struct {
		n string
		v int64
	}{{"prompt_tokens", prompt}, {"completion_tokens", output}, {"cached_tokens", cached}} {
		if err := nonNegative(f.n, f.v); err != nil {
			return Meters{}, err
		}
	}
	if cached > prompt {
		return Meters{}, bad("invalid_quantity", "cached_tokens (%d) exceed prompt tokens (%d)", cached, prompt)
	}
	return Meters{InputTokens: prompt - cached, OutputTokens: output, CachedInputTokens: cached, APICalls: 1}, nil
}

// MetersFromAnthropic maps Anthropic's usage, whose input_tokens already
// exclude cache reads and writes, each to its own meter. One API call.
func MetersFromAnthropic(u AnthropicUsage) (Meters, error) {
	for _, f := range []struct {
		n string
		v int64
	}{{"input_tokens", u.InputTokens}, {"output_tokens", u.OutputTokens},
		{"cache_read_input_tokens", u.CacheReadInputTokens}, {"cache_creation_input_tokens", u.CacheCreationInputTokens}} {
		if err := nonNegative(f.n, f.v); err != nil {
			return Meters{}, err
		}
	}
	return Meters{InputTokens: u.InputTokens, OutputTokens: u.OutputTokens,
		CachedInputTokens: u.CacheReadInputTokens, CacheWriteTokens: u.CacheCreationInputTokens, APICalls: 1}, nil
}

type openAIResponse struct {
	Model string       `json:"model"`
	Usage *OpenAIUsage `json:"usage"`
}

type anthropicResponse struct {
	Model string          `json:"model"`
	Usage *AnthropicUsage `json:"usage"`
}

func badJSON(err error) error {
	return bad("invalid_quantity", "usage is not JSON with integer counts: %v", err)
}

// RecordOpenAI records the usage of a raw OpenAI response body (JSON with
// "model" and "usage"), provider "openai" unless the span has one.
func (s *Span) RecordOpenAI(body []byte) (Meters, error) {
	var r openAIResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return Meters{}, badJSON(err)
	}
	if r.Usage == nil {
		return Meters{}, bad("missing_usage", "response has no usage")
	}
	m, err := MetersFromOpenAI(*r.Usage)
	if err != nil {
		return m, err
	}
	return m, s.Record(m, s.vendorOpts(r.Model, "openai")...)
}

// RecordAnthropic records the usage of a raw Anthropic Messages response body.
func (s *Span) RecordAnthropic(body []byte) (Meters, error) {
	var r anthropicResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return Meters{}, badJSON(err)
	}
	if r.Usage == nil {
		return Meters{}, bad("missing_usage", "response has no usage")
	}
	m, err := MetersFromAnthropic(*r.Usage)
	if err != nil {
		return m, err
	}
	return m, s.Record(m, s.vendorOpts(r.Model, "anthropic")...)
}

func (s *Span) vendorOpts(model, provider string) []RecordOption {
	var opts []RecordOption
	if model != "" {
		opts = append(opts, RecordModel(model))
	}
	if s.provider == nil || *s.provider == "" {
		opts = append(opts, RecordProvider(provider))
	}
	return opts
}
