package metrics

import (
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"strconv"
	"strings"
	"testing"
)

// The cases are Dynamo's own (lib/runtime/src/metrics/prometheus_names.rs
// tests) plus the ones where this package decides.
func TestSanitizeMetricName(t *testing.T) {
	tests := []struct {
		name, raw, want string
		wantErr         bool
	}{
		{name: "valid", raw: "valid_name", want: "valid_name"},
		{name: "digits inside", raw: "test123", want: "test123"},
		{name: "colon kept", raw: "test:name", want: "test:name"},
		{name: "space", raw: "test name", want: "test_name"},
		{name: "dot", raw: "test.name", want: "test_name"},
		{name: "at", raw: "test@name", want: "test_name"},
		{name: "dash", raw: "test-name", want: "test_name"},
		{name: "several", raw: "test$name#123", want: "test_name_123"},
		{name: "double underscore inside", raw: "test__name", want: "test__name"},
		{name: "leading double underscore allowed", raw: "__test", want: "__test"},
		{name: "leading digit", raw: "123test", want: "_123test"},
		{name: "leading invalid", raw: "@test", want: "_test"},
		{name: "leading dash", raw: "-test", want: "_test"},
		{name: "leading colon kept", raw: ":test", want: ":test"},
		{name: "complex", raw: "123.test-name@domain", want: "_123_test_name_domain"},
		{name: "multibyte rune is one underscore", raw: "café_hits", want: "caf__hits"},
		{name: "empty", raw: "", wantErr: true},
		{name: "only invalid", raw: "@#$%", wantErr: true},
		{name: "only bangs", raw: "!!!!", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := SanitizeMetricName(tt.raw)
			if tt.wantErr {
				if !errors.Is(err, ErrInvalidName) {
					t.Fatalf("SanitizeMetricName(%q) = %q, %v; want ErrInvalidName", tt.raw, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("SanitizeMetricName(%q) = %q, %v; want %q", tt.raw, got, err, tt.want)
			}
		})
	}
}

func TestSanitizeLabelName(t *testing.T) {
	tests := []struct {
		name, raw, want string
		wantErr         bool
	}{
		{name: "valid", raw: "valid_label", want: "valid_label"},
		{name: "digits inside", raw: "test123", want: "test123"},
		{name: "colon replaced", raw: "test:label", want: "test_label"},
		{name: "space", raw: "test label", want: "test_label"},
		{name: "dot", raw: "test.label", want: "test_label"},
		{name: "dash", raw: "test-label", want: "test_label"},
		{name: "several", raw: "test$label#123", want: "test_label_123"},
		{name: "double underscore inside", raw: "test__label", want: "test__label"},
		{name: "quadruple underscore inside", raw: "test____label", want: "test____label"},
		{name: "leading double underscore removed", raw: "__test", want: "test"},
		{name: "leading triple underscore removed", raw: "___test", want: "test"},
		{name: "reserved then digit", raw: "__1x", want: "_1x"},
		{name: "single leading underscore kept", raw: "_x", want: "_x"},
		{name: "invalid chars making a reserved prefix", raw: "@@x", want: "x"},
		{name: "leading digit", raw: "123test", want: "_123test"},
		{name: "leading at", raw: "@test", want: "_test"},
		{name: "leading colon", raw: ":test", want: "_test"},
		{name: "leading dash", raw: "-test", want: "_test"},
		{name: "complex", raw: "123:test-label@domain", want: "_123_test_label_domain"},
		{name: "namespace with dash", raw: "my-ns", want: "my_ns"},
		{name: "empty", raw: "", wantErr: true},
		{name: "only underscores", raw: "____", wantErr: true},
		{name: "only invalid", raw: "@#$%", wantErr: true},
		{name: "only bangs", raw: "!!!!", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := SanitizeLabelName(tt.raw)
			if tt.wantErr {
				if !errors.Is(err, ErrInvalidName) {
					t.Fatalf("SanitizeLabelName(%q) = %q, %v; want ErrInvalidName", tt.raw, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("SanitizeLabelName(%q) = %q, %v; want %q", tt.raw, got, err, tt.want)
			}
			if !ValidLabelName(got) {
				t.Errorf("ValidLabelName(%q) = false for a sanitised name", got)
			}
		})
	}
}

func TestValidLabelName(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want bool
	}{
		{name: "plain", in: "worker_id", want: true},
		{name: "leading underscore", in: "_x", want: true},
		{name: "reserved", in: "__name__", want: false},
		{name: "colon", in: "a:b", want: false},
		{name: "leading digit", in: "1a", want: false},
		{name: "empty", in: "", want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ValidLabelName(tt.in); got != tt.want {
				t.Errorf("ValidLabelName(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

// Every name constant must already be in its sanitised form: the package
// never relies on sanitising to fix its own names. The constants are read
// from names.go itself, so a new one is checked without being listed.
func TestNameConstantsAreSanitised(t *testing.T) {
	names, labels := catalogue(t)
	if len(names) < 40 || len(labels) < 10 {
		t.Fatalf("found %d Name and %d Label constants in names.go; the parser missed them", len(names), len(labels))
	}
	for _, name := range names {
		if got, err := SanitizeMetricName(name); err != nil || got != name {
			t.Errorf("metric name %q sanitises to %q, %v", name, got, err)
		}
	}
	for _, l := range labels {
		if !ValidLabelName(l) {
			t.Errorf("label name %q is not valid", l)
		}
	}
}

// catalogue returns the values of the Name* and Label* constants of
// names.go.
func catalogue(t *testing.T) (names, labels []string) {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "names.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range f.Decls {
		gd, ok := d.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, spec := range gd.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, id := range vs.Names {
				lit, ok := vs.Values[i].(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					continue
				}
				v, err := strconv.Unquote(lit.Value)
				if err != nil {
					t.Fatal(err)
				}
				switch {
				case strings.HasPrefix(id.Name, "Name"):
					names = append(names, v)
				case strings.HasPrefix(id.Name, "Label"):
					labels = append(labels, v)
				}
			}
		}
	}
	return names, labels
}
