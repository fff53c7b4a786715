// Command kstatus-check computes the kstatus of Kubernetes objects with the library Flux's
// health checks use (sigs.k8s.io/cli-utils/pkg/kstatus/status, status.Compute), so that what
// the docs say Flux sees can be checked against real objects.
//
//	kstatus-check [-o text|json] [FILE]
//
// FILE (or stdin when absent or "-") holds one object, a List (`kubectl get -o json`), a JSON
// array, or a YAML stream of any of those. It prints one line per object,
//
//	namespace/name Kind Status message
//
// or, with -o json, an array of {namespace, name, kind, status, message}. It exits 1 when an
// object's status cannot be computed, 2 on unreadable input.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"gopkg.in/yaml.v3"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

// verdict is what kstatus says about one object.
type verdict struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Kind      string `json:"kind"`
	Status    string `json:"status"`
	Message   string `json:"message"`
}

func main() {
	format := flag.String("o", "text", "output format: text or json")
	flag.Parse()
	if (*format != "text" && *format != "json") || flag.NArg() > 1 {
		fmt.Fprintln(os.Stderr, "usage: kstatus-check [-o text|json] [FILE]")
		os.Exit(2)
	}
	input, err := readInput(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "kstatus-check:", err)
		os.Exit(2)
	}
	objects, err := decode(input)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kstatus-check:", err)
		os.Exit(2)
	}
	verdicts, err := computeAll(objects)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kstatus-check:", err)
		os.Exit(1)
	}
	if err := write(os.Stdout, *format, verdicts); err != nil {
		fmt.Fprintln(os.Stderr, "kstatus-check:", err)
		os.Exit(1)
	}
}

func readInput(path string) ([]byte, error) {
	if path == "" || path == "-" {
		return io.ReadAll(os.Stdin)
	}
	return os.ReadFile(path)
}

// decode reads every object of a YAML stream (JSON is YAML), flattening Lists and arrays.
func decode(input []byte) ([]map[string]any, error) {
	var objects []map[string]any
	decoder := yaml.NewDecoder(bytes.NewReader(input))
	for {
		var document any
		err := decoder.Decode(&document)
		if errors.Is(err, io.EOF) {
			return objects, nil
		}
		if err != nil {
			return nil, fmt.Errorf("parse input: %w", err)
		}
		flat, err := flatten(document)
		if err != nil {
			return nil, err
		}
		objects = append(objects, flat...)
	}
}

func flatten(document any) ([]map[string]any, error) {
	switch doc := document.(type) {
	case nil:
		return nil, nil
	case []any:
		var objects []map[string]any
		for _, item := range doc {
			flat, err := flatten(item)
			if err != nil {
				return nil, err
			}
			objects = append(objects, flat...)
		}
		return objects, nil
	case map[string]any:
		kind, _ := doc["kind"].(string)
		if items, isList := doc["items"].([]any); isList && strings.HasSuffix(kind, "List") {
			return flatten(items)
		}
		return []map[string]any{doc}, nil
	default:
		return nil, fmt.Errorf("not an object: %v", document)
	}
}

func computeAll(objects []map[string]any) ([]verdict, error) {
	verdicts := make([]verdict, 0, len(objects))
	for _, object := range objects {
		// A round trip through JSON gives the numbers unstructured expects (int64, float64),
		// whatever the YAML decoder produced.
		normalised, err := normalise(object)
		if err != nil {
			return nil, err
		}
		u := &unstructured.Unstructured{Object: normalised}
		result, err := status.Compute(u)
		if err != nil {
			return nil, fmt.Errorf("%s/%s %s: %w", u.GetNamespace(), u.GetName(), u.GetKind(), err)
		}
		verdicts = append(verdicts, verdict{
			Namespace: u.GetNamespace(),
			Name:      u.GetName(),
			Kind:      u.GetKind(),
			Status:    result.Status.String(),
			Message:   result.Message,
		})
	}
	return verdicts, nil
}

func normalise(object map[string]any) (map[string]any, error) {
	raw, err := json.Marshal(object)
	if err != nil {
		return nil, fmt.Errorf("encode object: %w", err)
	}
	var normalised map[string]any
	decoder := json.NewDecoder(bytes.NewReader(raw))
	decoder.UseNumber()
	if err := decoder.Decode(&normalised); err != nil {
		return nil, fmt.Errorf("decode object: %w", err)
	}
	return numbersToGo(normalised).(map[string]any), nil
}

// numbersToGo turns json.Number into int64 (or float64), as apimachinery's JSON decoding does.
func numbersToGo(value any) any {
	switch v := value.(type) {
	case map[string]any:
		for k, item := range v {
			v[k] = numbersToGo(item)
		}
		return v
	case []any:
		for i, item := range v {
			v[i] = numbersToGo(item)
		}
		return v
	case json.Number:
		if i, err := v.Int64(); err == nil {
			return i
		}
		f, _ := v.Float64()
		return f
	default:
		return v
	}
}

func write(out io.Writer, format string, verdicts []verdict) error {
	if format == "json" {
		encoder := json.NewEncoder(out)
		encoder.SetIndent("", "  ")
		return encoder.Encode(verdicts)
	}
	for _, v := range verdicts {
		if _, err := fmt.Fprintf(out, "%s/%s %s %s %s\n", v.Namespace, v.Name, v.Kind, v.Status, v.Message); err != nil {
			return err
		}
	}
	return nil
}
