package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"

	"github.com/urfave/cli/v2"
)

// Every command reports a bad command line the same way (exit status 2):
// one line per problem, every problem at once, each naming its flag once,
// with two dashes. The flag package under urfave/cli stops at the first
// value it cannot parse and names it with one dash; reportProblems reads
// the command line again to list them all, then checks what did parse.

// flagCheck validates what a command's flags parsed to, without running the
// command, and returns every problem (errors.Join), each naming its flag.
type flagCheck func(*cli.Context) error

// reportProblems makes cmds and their subcommands, named under path, report
// a command line their flags cannot parse with usageProblems. checks holds
// the validation of the commands that have one, by full name ("serve"), so
// that values out of range are listed with the values that did not parse.
func reportProblems(path string, cmds []*cli.Command, checks map[string]flagCheck) {
	for _, cmd := range cmds {
		name := strings.TrimSpace(path + " " + cmd.Name)
		check := checks[name]
		if len(cmd.Subcommands) == 0 {
			// A command without subcommands has no help subcommand either:
			// urfave/cli would otherwise read `serve h x` as help on topic x
			// and fail with status 3 instead of a usage error; --help stays.
			cmd.HideHelpCommand = true
		}
		cmd.OnUsageError = func(c *cli.Context, err error, _ bool) error {
			// cmd.Flags as set up by urfave/cli, with its help flag.
			return usageProblems(name, cmd.Flags, commandArgs(c), err, check)
		}
		reportProblems(name, cmd.Subcommands, checks)
	}
}

// commandArgs returns the arguments given to the command whose flags failed
// to parse: its own context has none then, its parent's holds them after
// the command's name.
func commandArgs(c *cli.Context) []string {
	lineage := c.Lineage()
	if len(lineage) < 2 || lineage[1] == nil {
		return nil
	}
	return lineage[1].Args().Tail()
}

// usageProblems is the error of a command line that failed to parse with
// err: every problem of args, then, if check is set, every problem of the
// values that did parse.
func usageProblems(name string, flags []cli.Flag, args []string, err error, check flagCheck) error {
	problems, clean := flagProblems(flags, args)
	if len(problems) == 0 {
		// Our reading found nothing wrong where urfave/cli did (or had no
		// arguments to read): say what it said, in our spelling.
		return listProblems(name, []string{respell(err.Error())})
	}
	if check != nil {
		problems = append(problems, checkArgs(name, flags, clean, check)...)
	}
	return listProblems(name, problems)
}

// The flag package's messages, and a flag named with one dash as it names
// them.
var (
	undefinedFlag = regexp.MustCompile(`^flag provided but not defined: -+(.+)$`)
	missingValue  = regexp.MustCompile(`^flag needs an argument: -+(.+)$`)
	singleDash    = regexp.MustCompile(`(^|[\s(])-([A-Za-z][\w-]*)`)
)

// respell puts a message of the flag package as ours: flag first, with two
// dashes.
func respell(msg string) string {
	if m := undefinedFlag.FindStringSubmatch(msg); m != nil {
		return "--" + m[1] + ": no such flag"
	}
	if m := missingValue.FindStringSubmatch(msg); m != nil {
		return "--" + m[1] + ": needs a value"
	}
	return singleDash.ReplaceAllString(msg, "${1}--${2}")
}

// flagProblems reads args as the flag package would, but goes on past a
// problem: it returns one line per problem ("--flag: what is wrong") and
// the arguments without the flags that have one, every flag as
// --name=value. An unknown flag takes the next argument with it when that
// does not look like a flag, so that a value does not end the reading.
func flagProblems(flags []cli.Flag, args []string) (problems []string, clean []string) {
	set := flag.NewFlagSet("", flag.ContinueOnError)
	set.SetOutput(io.Discard)
	byName := map[string]cli.Flag{}
	for _, f := range flags {
		for _, n := range f.Names() {
			byName[n] = f
		}
		if err := f.Apply(set); err != nil {
			// Only an environment variable fails to apply; the flag is
			// still read from args, as a string, so its problems show.
			problems = append(problems, envProblem(f, err))
			for _, n := range f.Names() {
				if set.Lookup(n) == nil {
					set.String(n, "", "")
				}
			}
		}
	}
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if arg == "--" || len(arg) < 2 || arg[0] != '-' {
			clean = append(clean, args[i:]...)
			break
		}
		name := strings.TrimPrefix(arg[1:], "-")
		if name == "" || name[0] == '-' || name[0] == '=' {
			problems = append(problems, fmt.Sprintf("%s: bad flag syntax", arg))
			continue
		}
		name, value, hasValue := strings.Cut(name, "=")
		fl := set.Lookup(name)
		if fl == nil {
			problems = append(problems, unknownFlag(name, flags))
			if !hasValue && i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
				i++
			}
			continue
		}
		display := "--" + byName[name].Names()[0]
		if b, ok := fl.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
			if !hasValue {
				value = "true"
			}
		} else if !hasValue {
			if i+1 == len(args) {
				problems = append(problems, display+": needs a value")
				continue
			}
			i++
			value = args[i]
		}
		if err := set.Set(name, value); err != nil {
			problems = append(problems, fmt.Sprintf("%s: %q %s", display, value, notA(byName[name], err)))
			continue
		}
		clean = append(clean, "--"+name+"="+value)
	}
	return problems, clean
}

// notA says why a value does not parse as f's type.
func notA(f cli.Flag, err error) string {
	var kind string
	switch f.(type) {
	case *cli.IntFlag, *cli.Int64Flag:
		kind = "an integer"
	case *cli.UintFlag, *cli.Uint64Flag:
		kind = "a non-negative integer"
	case *cli.Float64Flag:
		kind = "a number"
	case *cli.DurationFlag:
		kind = "a duration such as 500ms, 10s or 1m30s"
	case *cli.BoolFlag:
		kind = "true or false"
	default:
		return fmt.Sprintf("is not a valid value (%v)", err)
	}
	if err != nil && strings.Contains(err.Error(), "out of range") {
		return "is out of range for " + kind
	}
	return "is not " + kind
}

// envProblem says which environment variable of f does not parse.
func envProblem(f cli.Flag, err error) string {
	display := "--" + f.Names()[0]
	if df, ok := f.(cli.DocGenerationFlag); ok {
		for _, ev := range df.GetEnvVars() {
			if v, set := os.LookupEnv(ev); set && strings.TrimSpace(v) != "" {
				return fmt.Sprintf("%s: %q from %s %s", display, v, ev, notA(f, nil))
			}
		}
	}
	return display + ": " + err.Error()
}

// unknownFlag says that --name is no flag of the command, with the flag
// that was probably meant when one is close (a name that contains the
// other, as --block-size and --router-block-size).
func unknownFlag(name string, flags []cli.Flag) string {
	msg := "--" + name + ": no such flag"
	if s := strings.TrimLeft(cli.SuggestFlag(flags, name, true), "-"); s != "" && (strings.Contains(s, name) || strings.Contains(name, s)) {
		msg += " (did you mean --" + s + "?)"
	}
	return msg
}

// checkArgs runs check on the flags of clean, a command line that parses,
// in a throwaway app that runs nothing else.
func checkArgs(name string, flags []cli.Flag, clean []string, check flagCheck) []string {
	var problems []string
	app := &cli.App{
		Writer: io.Discard, ErrWriter: io.Discard,
		ExitErrHandler: func(*cli.Context, error) {},
		Commands: []*cli.Command{{
			Name: "check", Flags: flags, HideHelp: true,
			Action: func(c *cli.Context) error {
				problems = lines(check(c))
				return nil
			},
		}},
	}
	if err := app.Run(append([]string{name, "check"}, clean...)); err != nil {
		return nil // what failed to parse is reported already
	}
	return problems
}

// listProblems is the error of a bad command line (exit status 2):
// "name: problem" for one problem, one indented line per problem under
// "name: N problems:" for several; the root command has no name. A line
// given twice is listed once.
func listProblems(name string, problems []string) error {
	var all []string
	seen := map[string]bool{}
	for _, p := range problems {
		if p != "" && !seen[p] {
			seen[p] = true
			all = append(all, p)
		}
	}
	prefix := ""
	if name != "" {
		prefix = name + ": "
	}
	switch len(all) {
	case 0:
		return nil
	case 1:
		return usageError("%s%s", prefix, all[0])
	}
	return usageError("%s%d problems:\n  %s", prefix, len(all), strings.Join(all, "\n  "))
}

// lines splits an error, joined with errors.Join or not, into its lines.
func lines(err error) []string {
	if err == nil {
		return nil
	}
	return strings.Split(err.Error(), "\n")
}
