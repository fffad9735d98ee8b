package client_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"strings"
	"testing"
)

// docs/frontend.md shows a complete program whose functions frontend and
// generate are Example_frontend's, which runs against a real router: the
// page's copy must stay equal to them, comments included, and parse.
func TestFrontendDocShowsTheExample(t *testing.T) {
	doc, err := os.ReadFile("../docs/frontend.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "```go\n")
	program, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("docs/frontend.md has no ```go block")
	}
	example, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	docFuncs := funcSources(t, "docs/frontend.md", program)
	exFuncs := funcSources(t, "example_test.go", string(example))
	for _, name := range []string{"frontend", "generate"} {
		if exFuncs[name] == "" {
			t.Fatalf("example_test.go has no func %s", name)
		}
		if docFuncs[name] != exFuncs[name] {
			t.Errorf("func %s of docs/frontend.md differs from example_test.go's; copy it over:\n%s", name, exFuncs[name])
		}
	}
	if docFuncs["main"] == "" || !strings.Contains(docFuncs["main"], "frontend(ctx, nc, prompt)") {
		t.Error("the program of docs/frontend.md has no main calling frontend")
	}
}

// funcSources returns the source of each function of a Go file, from its
// doc comment to its closing brace.
func funcSources(t *testing.T, name, src string) map[string]string {
	t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, name, src, parser.ParseComments)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	out := map[string]string{}
	for _, d := range f.Decls {
		fd, ok := d.(*ast.FuncDecl)
		if !ok {
			continue
		}
		start := fd.Pos()
		if fd.Doc != nil {
			start = fd.Doc.Pos()
		}
		out[fd.Name.Name] = src[fset.Position(start).Offset:fset.Position(fd.End()).Offset]
	}
	return out
}
