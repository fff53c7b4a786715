// Command chart-readme renders a Helm chart's README from README.md.gotmpl and the `# --`
// comments of values.yaml (the helm-docs convention):
//
//	# -- Description of the key below; it may continue on the following comment lines.
//	# @default -- text shown instead of the literal default
//	key: value
//
// A commented key is one table row (a commented map is documented as a whole); an uncommented
// map is descended into; an uncommented leaf gets a row without a description.
//
//	chart-readme CHART_DIR            print the README
//	chart-readme -w CHART_DIR         write CHART_DIR/README.md
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/template"

	"gopkg.in/yaml.v3"
)

type row struct{ Key, Type, Default, Description string }

type chart struct {
	Name        string `yaml:"name"`
	Description string `yaml:"description"`
	Version     string `yaml:"version"`
	AppVersion  string `yaml:"appVersion"`
	KubeVersion string `yaml:"kubeVersion"`
	Home        string `yaml:"home"`
	Values      string `yaml:"-"`
}

func main() {
	write := flag.Bool("w", false, "write CHART_DIR/README.md instead of printing it")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: chart-readme [-w] CHART_DIR")
		os.Exit(2)
	}
	out, err := render(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "chart-readme:", err)
		os.Exit(1)
	}
	if *write {
		err = os.WriteFile(filepath.Join(flag.Arg(0), "README.md"), out, 0o644)
	} else {
		_, err = os.Stdout.Write(out)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "chart-readme:", err)
		os.Exit(1)
	}
}

func render(dir string) ([]byte, error) {
	var c chart
	raw, err := os.ReadFile(filepath.Join(dir, "Chart.yaml"))
	if err != nil {
		return nil, err
	}
	if err := yaml.Unmarshal(raw, &c); err != nil {
		return nil, fmt.Errorf("Chart.yaml: %w", err)
	}
	raw, err = os.ReadFile(filepath.Join(dir, "values.yaml"))
	if err != nil {
		return nil, err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("values.yaml: %w", err)
	}
	var rows []row
	if len(doc.Content) == 1 {
		if err := walk(doc.Content[0], "", &rows); err != nil {
			return nil, err
		}
	}
	var b strings.Builder
	b.WriteString("| Key | Type | Default | Description |\n|-----|------|---------|-------------|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", r.Key, r.Type, r.Default, r.Description)
	}
	c.Values = strings.TrimSuffix(b.String(), "\n")
	tpl, err := template.ParseFiles(filepath.Join(dir, "README.md.gotmpl"))
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := tpl.Execute(&out, c); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

func walk(m *yaml.Node, prefix string, rows *[]row) error {
	if m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		key := prefix + k.Value
		desc, def, documented := comment(k.HeadComment)
		if !documented && v.Kind == yaml.MappingNode && len(v.Content) > 0 {
			if err := walk(v, key+".", rows); err != nil {
				return err
			}
			continue
		}
		if def == "" {
			var val any
			if err := v.Decode(&val); err != nil {
				return fmt.Errorf("%s: %w", key, err)
			}
			js, err := json.Marshal(val)
			if err != nil {
				return fmt.Errorf("%s: %w", key, err)
			}
			def = "`" + string(js) + "`"
		}
		*rows = append(*rows, row{Key: "`" + key + "`", Type: typeOf(v), Default: escape(def), Description: escape(desc)})
	}
	return nil
}

// comment returns the `# --` description of a key and its `# @default --` override.
func comment(head string) (desc, def string, ok bool) {
	lines := strings.Split(head, "\n")
	start := -1
	for i, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), "# --") {
			start = i
		}
	}
	if start < 0 {
		return "", "", false
	}
	var parts []string
	for i, l := range lines[start:] {
		l = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), "#"))
		if i == 0 {
			l = strings.TrimSpace(strings.TrimPrefix(l, "--"))
		}
		if strings.HasPrefix(l, "@default --") {
			def = strings.TrimSpace(strings.TrimPrefix(l, "@default --"))
			continue
		}
		if l != "" {
			parts = append(parts, l)
		}
	}
	return strings.Join(parts, " "), def, true
}

func typeOf(v *yaml.Node) string {
	switch v.Kind {
	case yaml.MappingNode:
		return "object"
	case yaml.SequenceNode:
		return "list"
	}
	switch v.Tag {
	case "!!int":
		return "int"
	case "!!float":
		return "float"
	case "!!bool":
		return "bool"
	case "!!null":
		return "int or null"
	}
	return "string"
}

// escape keeps table cells intact and <placeholders> visible in Markdown.
func escape(s string) string {
	return strings.NewReplacer("|", `\|`, "<", "&lt;", ">", "&gt;").Replace(s)
}
