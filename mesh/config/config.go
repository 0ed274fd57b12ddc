// Package config loads a service's typed configuration from environment variables and command-line
// flags, declared once in struct tags, and renders the same declarations as documentation, so the
// settings tables in docs/services.md cannot drift from the code.
//
// A field takes part when it has an `env` tag; `flag` names its flag (default: the env name in
// lower-case kebab form; "-" for a setting read from the environment only, such as a variable a library
// reads itself) and `help` describes it. Defaults are whatever the struct holds before Load.
// Precedence: flag, then environment, then default. Nested structs without an `env` tag are walked,
// so services embed shared settings.
package config

import (
	"encoding"
	"errors"
	"flag"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// Field describes one setting, for documentation.
type Field struct {
	// Env is the environment variable name.
	Env string
	// Flag is the command-line flag name, without dashes; "-" for a setting without a flag.
	Flag string
	// Default is the default value as text.
	Default string
	// Help says what the setting does.
	Help string
}

// Load fills cfg, a pointer to a struct holding defaults, from getenv and then from args. Errors name
// the variable or flag and the bad value. -h writes the usage of program to usage and returns
// flag.ErrHelp, which callers treat as a clean exit.
func Load(cfg any, program string, args []string, getenv func(string) string, usage io.Writer) error {
	fields, err := walk(cfg)
	if err != nil {
		return err
	}
	fs := flag.NewFlagSet(program, flag.ContinueOnError)
	fs.SetOutput(usage)
	for _, f := range fields {
		if v := getenv(f.Env); v != "" {
			if err := f.set(v); err != nil {
				return fmt.Errorf("environment variable %s=%q: %w", f.Env, v, err)
			}
		}
		if f.Flag != envOnly {
			fs.Var(f, f.Flag, f.Help+" (env "+f.Env+")")
		}
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return nil
}

// Validator is a configuration that checks its own values once loaded.
type Validator interface {
	Validate() error
}

// DocFlag is the argument with which a service prints its settings as a Markdown table instead of
// running: the settings tables in docs/services.md are generated from it.
const DocFlag = "-config-doc"

// Parse is every service's start-up configuration step. With the single argument DocFlag it writes cfg's
// settings as a Markdown table to stdout; otherwise it loads cfg (a pointer to a struct holding defaults)
// from getenv and args, as Load does, and validates it. It reports whether the program should go on:
// false with a nil error once the table or the -h usage is written, false with the error when loading or
// validation fails.
func Parse(cfg Validator, program string, args []string, getenv func(string) string, stdout, stderr io.Writer) (bool, error) {
	if len(args) == 1 && args[0] == DocFlag {
		doc, err := Markdown(cfg)
		if err != nil {
			return false, err
		}
		_, err = io.WriteString(stdout, doc)
		return false, err
	}
	if err := Load(cfg, program, args, getenv, stderr); errors.Is(err, flag.ErrHelp) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	if err := cfg.Validate(); err != nil {
		return false, fmt.Errorf("invalid configuration: %w", err)
	}
	return true, nil
}

// Fields lists the settings of cfg (a pointer to a struct) with their current values as defaults.
func Fields(cfg any) ([]Field, error) {
	fields, err := walk(cfg)
	if err != nil {
		return nil, err
	}
	out := make([]Field, 0, len(fields))
	for _, f := range fields {
		out = append(out, Field{Env: f.Env, Flag: f.Flag, Default: f.String(), Help: f.Help})
	}
	return out, nil
}

// Markdown renders cfg's settings as a Markdown table.
func Markdown(cfg any) (string, error) {
	fields, err := Fields(cfg)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString("| Environment variable | Flag | Default | Meaning |\n|---|---|---|---|\n")
	for _, f := range fields {
		def := "`" + f.Default + "`"
		if f.Default == "" {
			def = "(empty)"
		}
		flagName := "`-" + f.Flag + "`"
		if f.Flag == envOnly {
			flagName = "(none)"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", f.Env, flagName, def, strings.ReplaceAll(f.Help, "|", `\|`))
	}
	return b.String(), nil
}

// envOnly is the flag tag of a setting that has no flag.
const envOnly = "-"

// field is a settable struct field; it implements flag.Value.
type field struct {
	Env, Flag, Help string
	v               reflect.Value
}

var (
	durationType = reflect.TypeFor[time.Duration]()
	textType     = reflect.TypeFor[encoding.TextUnmarshaler]()
	stringerType = reflect.TypeFor[fmt.Stringer]()
)

func walk(cfg any) ([]*field, error) {
	v := reflect.ValueOf(cfg)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return nil, fmt.Errorf("config: want a pointer to a struct, got %T", cfg)
	}
	var out []*field
	seen := map[string]bool{}
	var visit func(s reflect.Value) error
	visit = func(s reflect.Value) error {
		t := s.Type()
		for i := range t.NumField() {
			sf := t.Field(i)
			fv := s.Field(i)
			env := sf.Tag.Get("env")
			if env == "" {
				if sf.Type.Kind() == reflect.Struct && sf.IsExported() {
					if err := visit(fv); err != nil {
						return err
					}
				}
				continue
			}
			if !settable(fv) {
				return fmt.Errorf("config: field %s (env %s) has unsupported type %s", sf.Name, env, sf.Type)
			}
			if seen[env] {
				return fmt.Errorf("config: env %s declared twice", env)
			}
			seen[env] = true
			name := sf.Tag.Get("flag")
			if name == "" {
				name = strings.ReplaceAll(strings.ToLower(env), "_", "-")
			}
			out = append(out, &field{Env: env, Flag: name, Help: sf.Tag.Get("help"), v: fv})
		}
		return nil
	}
	return out, visit(v.Elem())
}

func settable(v reflect.Value) bool {
	if v.Addr().Type().Implements(textType) {
		return true
	}
	switch v.Kind() {
	case reflect.String, reflect.Bool, reflect.Int, reflect.Int64, reflect.Uint32, reflect.Float64:
		return true
	case reflect.Slice:
		return v.Type().Elem().Kind() == reflect.String
	}
	return false
}

func (f *field) set(s string) error {
	if tu, ok := f.v.Addr().Interface().(encoding.TextUnmarshaler); ok {
		return tu.UnmarshalText([]byte(s))
	}
	switch {
	case f.v.Type() == durationType:
		d, err := time.ParseDuration(s)
		if err != nil {
			return errors.New("not a duration (e.g. 250ms, 2s, 1m)")
		}
		f.v.SetInt(int64(d))
	case f.v.Kind() == reflect.String:
		f.v.SetString(s)
	case f.v.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return errors.New("not a boolean (true or false)")
		}
		f.v.SetBool(b)
	case f.v.Kind() == reflect.Int || f.v.Kind() == reflect.Int64:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return errors.New("not an integer")
		}
		f.v.SetInt(n)
	case f.v.Kind() == reflect.Uint32:
		n, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return errors.New("not a non-negative integer")
		}
		f.v.SetUint(n)
	case f.v.Kind() == reflect.Float64:
		n, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return errors.New("not a number")
		}
		f.v.SetFloat(n)
	case f.v.Kind() == reflect.Slice:
		var items []string
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				items = append(items, p)
			}
		}
		f.v.Set(reflect.ValueOf(items))
	}
	return nil
}

// String implements flag.Value; it renders the current value the way Set accepts it.
func (f *field) String() string {
	if f == nil || !f.v.IsValid() {
		return ""
	}
	if f.v.Addr().Type().Implements(stringerType) {
		return f.v.Addr().Interface().(fmt.Stringer).String()
	}
	if f.v.Type().Implements(stringerType) {
		return f.v.Interface().(fmt.Stringer).String()
	}
	if f.v.Kind() == reflect.Slice {
		return strings.Join(f.v.Interface().([]string), ",")
	}
	return fmt.Sprint(f.v.Interface())
}

// Set implements flag.Value.
func (f *field) Set(s string) error { return f.set(s) }

// IsBoolFlag lets boolean settings be given as a bare flag (-consul-register).
func (f *field) IsBoolFlag() bool { return f.v.IsValid() && f.v.Kind() == reflect.Bool }
