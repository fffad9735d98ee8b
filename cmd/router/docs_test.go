package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

var updateReadme = flag.Bool("update-readme", false, "rewrite the README's flag tables from the commands")

const (
	flagsBegin = "<!-- flags:begin (generated: go test ./cmd/router -run TestReadmeFlags -update-readme) -->"
	flagsEnd   = "<!-- flags:end -->"
)

// TestReadmeFlags keeps the README's configuration tables equal to the
// commands' flags, so that no flag or environment variable goes undocumented.
func TestReadmeFlags(t *testing.T) {
	const path = "../../README.md"
	readme, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := string(readme)
	begin, end := strings.Index(text, flagsBegin), strings.Index(text, flagsEnd)
	if begin < 0 || end < begin {
		t.Fatalf("README lacks the markers %q and %q", flagsBegin, flagsEnd)
	}
	want := flagsBegin + "\n" + flagTables() + flagsEnd
	got := text[begin : end+len(flagsEnd)]
	if got == want {
		return
	}
	if *updateReadme {
		text = text[:begin] + want + text[end+len(flagsEnd):]
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Fatal("README's flag tables differ from the commands; run: go test ./cmd/router -run TestReadmeFlags -update-readme")
}

// flagTables renders one Markdown table per command with flags.
func flagTables() string {
	var b strings.Builder
	var walk func(prefix string, cmds []*cli.Command)
	walk = func(prefix string, cmds []*cli.Command) {
		for _, c := range cmds {
			name := strings.TrimSpace(prefix + " " + c.Name)
			var rows []string
			for _, f := range c.Flags {
				df, ok := f.(cli.DocGenerationFlag)
				if !ok {
					continue
				}
				names := f.Names()
				flagName := "`--" + names[0] + "`"
				env := ""
				if ev := df.GetEnvVars(); len(ev) > 0 {
					env = "`" + strings.Join(ev, "`, `") + "`"
				}
				def := df.GetDefaultText()
				if def == "" && df.TakesValue() {
					def = df.GetValue()
				}
				if def != "" {
					def = "`" + def + "`"
				}
				usage := strings.ReplaceAll(df.GetUsage(), "|", `\|`)
				rows = append(rows, fmt.Sprintf("| %s | %s | %s | %s |", flagName, env, def, usage))
			}
			if len(rows) > 0 {
				fmt.Fprintf(&b, "\n#### `router %s`\n\n| flag | env | default | meaning |\n|---|---|---|---|\n%s\n", name, strings.Join(rows, "\n"))
			}
			walk(name, c.Subcommands)
		}
	}
	walk("", newApp(nil, nil).Commands)
	return b.String() + "\n"
}
