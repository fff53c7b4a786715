// Command promql-check parses every PromQL expression of Grafana dashboards (JSON) and
// PrometheusRule manifests (YAML, several documents allowed) and checks that every metric
// they select is one the operator exports, as registered in src/metrics.rs.
//
//	promql-check -metrics src/metrics.rs FILE...
//
// It prints one line per expression and exits 1 on any parse error, unknown metric, or a
// file without expressions.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"gopkg.in/yaml.v3"
)

type expr struct{ where, text string }

func main() {
	metricsFile := flag.String("metrics", "src/metrics.rs", "Rust source registering the operator's metrics")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: promql-check -metrics src/metrics.rs FILE...")
		os.Exit(2)
	}
	exported, err := exportedMetrics(*metricsFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL", err)
		os.Exit(1)
	}
	failed := false
	for _, file := range flag.Args() {
		exprs, err := extract(file)
		if err == nil && len(exprs) == 0 {
			err = errors.New("no expressions found")
		}
		if err != nil {
			fmt.Printf("FAIL %s: %v\n", file, err)
			failed = true
			continue
		}
		for _, e := range exprs {
			names, err := metricNames(e.text)
			if err == nil {
				var unknown []string
				for _, n := range names {
					if !exported[n] {
						unknown = append(unknown, n)
					}
				}
				if len(unknown) > 0 {
					err = fmt.Errorf("metrics not exported by the operator: %s", strings.Join(unknown, ", "))
				} else if len(names) == 0 {
					err = errors.New("selects no metric")
				}
			}
			if err != nil {
				fmt.Printf("FAIL %s %s: %v\n    %s\n", file, e.where, err, e.text)
				failed = true
				continue
			}
			fmt.Printf("ok   %s %s: %s\n", file, e.where, strings.Join(names, ", "))
		}
	}
	if failed {
		os.Exit(1)
	}
}

var (
	registerRe = regexp.MustCompile(`(?s)\.register\(\s*"([a-z0-9_]+)",\s*"(?:[^"\\]|\\.)*",\s*metrics\.([a-z0-9_]+)\.clone\(\)`)
	prefixRe   = regexp.MustCompile(`sub_registry_with_prefix\("([a-z0-9_]+)"\)`)
	fieldRe    = regexp.MustCompile(`pub ([a-z0-9_]+):\s*(?:Family<[A-Za-z0-9_]+,\s*)?(Counter|Gauge|Histogram)\b`)
	// A collector's metrics (src/metrics/process.rs): `counter(e, "name", ...)`, `gauge(e, "name", ...)`.
	collectedRe = regexp.MustCompile(`\b(counter|gauge)\(\s*e,\s*"([a-z0-9_]+)"`)
)

// exportedMetrics reads the metric families registered in src/metrics.rs and returns the
// series names Prometheus sees: counters get _total, histograms _bucket/_sum/_count.
func exportedMetrics(path string) (map[string]bool, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	prefix := ""
	if m := prefixRe.FindSubmatch(src); m != nil {
		prefix = string(m[1]) + "_"
	}
	types := map[string]string{}
	for _, m := range fieldRe.FindAllSubmatch(src, -1) {
		types[string(m[1])] = string(m[2])
	}
	names := map[string]bool{}
	for _, m := range registerRe.FindAllSubmatch(src, -1) {
		name, field := prefix+string(m[1]), string(m[2])
		switch types[field] {
		case "Counter":
			names[strings.TrimSuffix(name, "_total")+"_total"] = true
		case "Gauge":
			names[name] = true
		case "Histogram":
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				names[name+s] = true
			}
		default:
			return nil, fmt.Errorf("%s: metric %s is registered from field %s of unknown type", path, name, field)
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("%s: no registered metrics found", path)
	}
	// The collectors of the module's own files (src/metrics/*.rs), unprefixed.
	modules, _ := filepath.Glob(filepath.Join(strings.TrimSuffix(path, ".rs"), "*.rs"))
	for _, module := range modules {
		src, err := os.ReadFile(module)
		if err != nil {
			return nil, err
		}
		for _, m := range collectedRe.FindAllSubmatch(src, -1) {
			name := string(m[2])
			if string(m[1]) == "counter" {
				name = strings.TrimSuffix(name, "_total") + "_total"
			}
			names[name] = true
		}
	}
	return names, nil
}

// Grafana variables are not PromQL: give them values of the right kind before parsing.
var (
	grafanaRange = regexp.MustCompile(`\$__(rate_interval|interval|range)\b|\$\{__(rate_interval|interval|range)\}`)
	grafanaVar   = regexp.MustCompile(`\$\{[A-Za-z0-9_]+(:[a-z]+)?\}|\$[A-Za-z_][A-Za-z0-9_]*`)
	labelValues  = regexp.MustCompile(`^\s*label_values\(\s*(.+?)\s*,\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*$`)
)

func grafanaToPromQL(s string) string {
	s = grafanaRange.ReplaceAllString(s, "5m")
	return grafanaVar.ReplaceAllString(s, "grafana_variable")
}

func extract(file string) ([]expr, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	if strings.HasSuffix(file, ".json") {
		var doc any
		if err := json.Unmarshal(data, &doc); err != nil {
			return nil, err
		}
		var out []expr
		walkJSON(doc, "$", &out)
		return out, nil
	}
	var out []expr
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc struct {
			Kind     string `yaml:"kind"`
			Metadata struct {
				Name string `yaml:"name"`
			} `yaml:"metadata"`
			Spec struct {
				Groups []struct {
					Name  string `yaml:"name"`
					Rules []struct {
						Alert  string `yaml:"alert"`
						Record string `yaml:"record"`
						Expr   string `yaml:"expr"`
					} `yaml:"rules"`
				} `yaml:"groups"`
			} `yaml:"spec"`
		}
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, err
		}
		if doc.Kind != "PrometheusRule" {
			continue
		}
		for _, g := range doc.Spec.Groups {
			for _, r := range g.Rules {
				out = append(out, expr{where: fmt.Sprintf("%s/%s/%s%s", doc.Metadata.Name, g.Name, r.Alert, r.Record), text: r.Expr})
			}
		}
	}
	return out, nil
}

// walkJSON collects panel target expressions ("expr") and label_values() variable queries.
func walkJSON(v any, path string, out *[]expr) {
	switch t := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(t))
		for k := range t {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			p := path + "." + k
			if s, ok := t[k].(string); ok {
				if k == "expr" {
					*out = append(*out, expr{where: p, text: grafanaToPromQL(s)})
				} else if k == "query" {
					if m := labelValues.FindStringSubmatch(s); m != nil {
						*out = append(*out, expr{where: p, text: grafanaToPromQL(m[1])})
					}
				}
				continue
			}
			walkJSON(t[k], p, out)
		}
	case []any:
		for i, e := range t {
			walkJSON(e, fmt.Sprintf("%s[%d]", path, i), out)
		}
	}
}

func metricNames(q string) ([]string, error) {
	e, err := parser.ParseExpr(q)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var names []string
	var inspectErr error
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		for _, m := range vs.LabelMatchers {
			if m.Name == labels.MetricName {
				if m.Type != labels.MatchEqual {
					inspectErr = fmt.Errorf("selector %s matches metric names by pattern", vs)
				}
				name = m.Value
			}
		}
		if !seen[name] {
			seen[name] = true
			names = append(names, name)
		}
		return nil
	})
	sort.Strings(names)
	return names, inspectErr
}
