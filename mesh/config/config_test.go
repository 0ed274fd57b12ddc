package config_test

import (
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"meshplane.dev/mesh/config"
)

type Shared struct {
	LogLevel string `env:"LOG_LEVEL" help:"Minimum level."`
}

type cfg struct {
	Shared
	Addr    string        `env:"GRPC_ADDR" help:"Listen address."`
	Timeout time.Duration `env:"CALL_TIMEOUT" help:"Deadline | of calls."`
	Rate    float64       `env:"RATE" flag:"rate" help:"Requests per second."`
	Probes  uint32        `env:"PROBES" help:"Probes."`
	Verbose bool          `env:"VERBOSE" help:"More output."`
	Tags    []string      `env:"TAGS" help:"Tags."`
	Lib     string        `env:"LIB_FILE" flag:"-" help:"Read by a library."`
}

func defaults() cfg {
	return cfg{Shared: Shared{LogLevel: "info"}, Addr: "127.0.0.1:9030", Timeout: 2 * time.Second, Rate: 5, Probes: 1}
}

func TestLoadPrecedenceFlagThenEnvThenDefault(t *testing.T) {
	env := map[string]string{"GRPC_ADDR": "127.0.0.1:1", "CALL_TIMEOUT": "250ms", "TAGS": "a, b,", "LOG_LEVEL": "debug", "LIB_FILE": "/x"}
	got := defaults()
	err := config.Load(&got, "test", []string{"-grpc-addr", "127.0.0.1:2", "-rate=0.5", "-verbose"},
		func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := defaults()
	want.LogLevel = "debug"
	want.Addr = "127.0.0.1:2"
	want.Timeout = 250 * time.Millisecond
	want.Rate = 0.5
	want.Verbose = true
	want.Tags = []string{"a", "b"}
	want.Lib = "/x"
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(cfg{})); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}
}

func TestLoadErrorsNameTheSetting(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		wantErr string
	}{
		{"bad env duration", map[string]string{"CALL_TIMEOUT": "soon"}, nil, `CALL_TIMEOUT="soon"`},
		{"bad env number", map[string]string{"PROBES": "-1"}, nil, "PROBES"},
		{"bad flag", nil, []string{"-rate", "fast"}, "-rate"},
		{"unknown flag", nil, []string{"-nope"}, "nope"},
		{"stray argument", nil, []string{"extra"}, `"extra"`},
		{"env-only setting has no flag", nil, []string{"-lib-file", "/x"}, "lib-file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := defaults()
			err := config.Load(&c, "test", tt.args, func(k string) string { return tt.env[k] }, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("got %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestMarkdownListsEverySettingWithItsDefault(t *testing.T) {
	c := defaults()
	got, err := config.Markdown(&c)
	if err != nil {
		t.Fatal(err)
	}
	want := "| Environment variable | Flag | Default | Meaning |\n|---|---|---|---|\n" +
		"| `LOG_LEVEL` | `-log-level` | `info` | Minimum level. |\n" +
		"| `GRPC_ADDR` | `-grpc-addr` | `127.0.0.1:9030` | Listen address. |\n" +
		"| `CALL_TIMEOUT` | `-call-timeout` | `2s` | Deadline \\| of calls. |\n" +
		"| `RATE` | `-rate` | `5` | Requests per second. |\n" +
		"| `PROBES` | `-probes` | `1` | Probes. |\n" +
		"| `VERBOSE` | `-verbose` | `false` | More output. |\n" +
		"| `TAGS` | `-tags` | (empty) | Tags. |\n" +
		"| `LIB_FILE` | (none) | (empty) | Read by a library. |\n"
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("markdown (-want +got):\n%s", diff)
	}
}

func TestHelpListsEveryFlagWithItsVariable(t *testing.T) {
	c := defaults()
	var usage strings.Builder
	err := config.Load(&c, "payments", []string{"-h"}, func(string) string { return "" }, &usage)
	if !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: got %v, want flag.ErrHelp", err)
	}
	for _, want := range []string{"Usage of payments", "-call-timeout", "(env CALL_TIMEOUT)", "(default 2s)"} {
		if !strings.Contains(usage.String(), want) {
			t.Errorf("usage lacks %q:\n%s", want, usage.String())
		}
	}
}
