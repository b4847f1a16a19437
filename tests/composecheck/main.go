// composecheck reads the deployment files the way Docker's own tools do, for the tests
// (tests/integration/test_docker_compose.py) on machines without a Docker engine:
//
//	composecheck compose FILE     the project as `docker compose config --format json`
//	                              prints it (compose-go: the compose-spec schema,
//	                              interpolation, normalization, consistency checks)
//	composecheck dockerfile FILE  every stage's instructions as JSON, parsed by BuildKit's
//	                              Dockerfile parser with its linter's warnings
//	composecheck promql FILE      each PromQL expression of FILE (a JSON list of strings)
//	                              parsed by Prometheus' own parser: the metric names it
//	                              selects and the label names it groups or matches by
//
// An invalid file exits 1 with the parser's error on stderr.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	promparser "github.com/prometheus/prometheus/promql/parser"
)

func main() {
	if len(os.Args) != 3 {
		fail(2, "usage: composecheck compose|dockerfile|promql FILE")
	}
	var out []byte
	var err error
	switch os.Args[1] {
	case "compose":
		out, err = compose(os.Args[2])
	case "dockerfile":
		out, err = dockerfile(os.Args[2])
	case "promql":
		out, err = promql(os.Args[2])
	default:
		fail(2, "unknown kind "+os.Args[1])
	}
	if err != nil {
		fail(1, err.Error())
	}
	os.Stdout.Write(append(out, '\n'))
}

func fail(code int, msg string) {
	fmt.Fprintln(os.Stderr, msg)
	os.Exit(code)
}

func compose(path string) ([]byte, error) {
	opts, err := cli.NewProjectOptions([]string{path}, cli.WithOsEnv, cli.WithDotEnv)
	if err != nil {
		return nil, err
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		return nil, err
	}
	return project.MarshalJSON()
}

type command struct {
	Name     string `json:"name"`
	Original string `json:"original"`
	Value    any    `json:"value"`
}

type stage struct {
	Name     string    `json:"name"`
	Base     string    `json:"base"`
	Commands []command `json:"commands"`
}

type warning struct {
	Rule    string `json:"rule"`
	Message string `json:"message"`
	Line    int    `json:"line"`
}

func dockerfile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	res, err := parser.Parse(f)
	if err != nil {
		return nil, err
	}
	warnings := []warning{}
	for _, w := range res.Warnings {
		warnings = append(warnings, warning{Rule: "parser", Message: w.Short, Line: w.Location.Start.Line})
	}
	lint := linter.New(&linter.Config{Warn: func(rule, _, _, msg string, loc []parser.Range) {
		line := 0
		if len(loc) > 0 {
			line = loc[0].Start.Line
		}
		warnings = append(warnings, warning{Rule: rule, Message: msg, Line: line})
	}})
	stages, metaArgs, err := instructions.Parse(res.AST, lint)
	if err != nil {
		return nil, err
	}
	out := struct {
		Args     []instructions.ArgCommand `json:"args"`
		Stages   []stage                   `json:"stages"`
		Warnings []warning                 `json:"warnings"`
	}{Args: metaArgs, Warnings: warnings}
	for _, s := range stages {
		st := stage{Name: s.Name, Base: s.BaseName, Commands: []command{}}
		for _, c := range s.Commands {
			st.Commands = append(st.Commands, command{Name: c.Name(), Original: fmt.Sprint(c), Value: c})
		}
		out.Stages = append(out.Stages, st)
	}
	return json.MarshalIndent(out, "", "  ")
}

type selection struct {
	Expr    string   `json:"expr"`
	Metrics []string `json:"metrics"`
	Labels  []string `json:"labels"`
}

func promql(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var exprs []string
	if err := json.Unmarshal(data, &exprs); err != nil {
		return nil, err
	}
	p := promparser.NewParser(promparser.Options{})
	out := []selection{}
	for _, text := range exprs {
		expr, err := p.ParseExpr(text)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", text, err)
		}
		sel := selection{Expr: text, Metrics: []string{}, Labels: []string{}}
		promparser.Inspect(expr, func(node promparser.Node, _ []promparser.Node) error {
			switch n := node.(type) {
			case *promparser.VectorSelector:
				sel.Metrics = append(sel.Metrics, n.Name)
				for _, m := range n.LabelMatchers {
					if m.Name != "__name__" {
						sel.Labels = append(sel.Labels, m.Name)
					}
				}
			case *promparser.AggregateExpr:
				sel.Labels = append(sel.Labels, n.Grouping...)
			}
			return nil
		})
		out = append(out, sel)
	}
	return json.MarshalIndent(out, "", "  ")
}
