// Package crd_test checks the generated TrafficPolicy CRD in bases/ on a real API server: it must judge
// every spec exactly as v1alpha1's Go Validate does, name the field it rejects, and document itself for
// `kubectl explain`.
package crd_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/kubernetes"

	"meshplane.dev/operator/test/envtest"
	"meshplane.dev/operator/test/policytest"
)

var env *envtest.Env

func TestMain(m *testing.M) {
	env = envtest.MustStart(envtest.Options{})
	code := m.Run()
	if err := env.Stop(); err != nil {
		code = 1
	}
	os.Exit(code)
}

// submit sends the exact bytes of a TrafficPolicy to the API server as a dry-run create with strict field
// validation, so nothing is stored and unknown or duplicate fields are rejected as the Go decoder does.
// It returns nil if the server accepts the object.
func submit(t *testing.T, ns, spec string) error {
	t.Helper()
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	var status int
	err = cs.RESTClient().Post().
		AbsPath("/apis/traffic.meshplane.dev/v1alpha1/namespaces", ns, "trafficpolicies").
		Param("dryRun", "All").Param("fieldValidation", "Strict").
		SetHeader("Content-Type", "application/json").
		Body(policytest.Document(ns, "diff", spec)).
		Do(context.Background()).StatusCode(&status).Error()
	if err == nil {
		return nil
	}
	if status != http.StatusUnprocessableEntity && status != http.StatusBadRequest {
		t.Fatalf("API server answered %d, want 201, 400 or 422: %v", status, err)
	}
	return err
}

type specCase struct {
	name, spec string
	valid      *bool // nil for fuzz corpus entries: only agreement matters
}

// corpus returns the fuzz test's checked-in corpus: inputs found or written to probe the edges.
func corpus(t *testing.T) []specCase {
	t.Helper()
	dir := filepath.Join("..", "..", "internal", "desiredstate", "testdata", "fuzz", "FuzzBuild")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var cases []specCase
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) != 2 || lines[0] != "go test fuzz v1" || !strings.HasPrefix(lines[1], "string(") {
			t.Fatalf("%s: not a one-string fuzz corpus file", e.Name())
		}
		spec, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "string("), ")"))
		if err != nil {
			t.Fatalf("%s: %v", e.Name(), err)
		}
		cases = append(cases, specCase{name: "corpus/" + e.Name(), spec: spec})
	}
	return cases
}

// The API server (CRD schema, markers and CEL) and Go's Validate must accept and reject the same specs,
// so `meshplane render` tells a team offline exactly what `kubectl apply` would.
func TestAPIServerAndValidateAgree(t *testing.T) {
	ns := envtest.Namespace(t, env)
	var cases []specCase
	for _, c := range policytest.SpecCases {
		cases = append(cases, specCase{name: c.Name, spec: c.Spec, valid: &c.Valid})
	}
	invalid := false
	for _, c := range policytest.MessageCases {
		cases = append(cases, specCase{name: "messages/" + c.Name, spec: c.Spec, valid: &invalid})
	}
	cases = append(cases, corpus(t)...)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			serverErr := submit(t, ns, c.spec)
			goOK, goWhy := policytest.Accepts(c.spec)
			if (serverErr == nil) != goOK {
				t.Errorf("spec %s\nAPI server accepts: %v (%v)\nValidate accepts:   %v (%s)", c.spec, serverErr == nil, serverErr, goOK, goWhy)
			}
			if c.valid != nil && goOK != *c.valid {
				t.Errorf("spec %s: accepted = %v, want %v (%s)", c.spec, goOK, *c.valid, goWhy)
			}
		})
	}
}

// message is one problem reported about a spec: the field path and the text a team reads.
type message struct{ field, text string }

// The API server and Validate report each problem of a spec once, at the same field, with the values that
// break the rule: a malformed duration gets the pattern's message and no CEL "type conversion error", a
// split whose weights miss 100 says what they sum to.
func TestAPIServerAndValidateSayTheSame(t *testing.T) {
	ns := envtest.Namespace(t, env)
	for _, c := range policytest.MessageCases {
		t.Run(c.Name, func(t *testing.T) {
			var server []message
			serverErr := submit(t, ns, c.Spec)
			status, ok := errors.AsType[*apierrors.StatusError](serverErr)
			if !ok || status.Status().Details == nil {
				t.Fatalf("spec %s: API server answered %v, want Invalid with causes", c.Spec, serverErr)
			}
			for _, cause := range status.Status().Details.Causes {
				server = append(server, message{field: cause.Field, text: cause.Message})
			}
			errs, err := policytest.Validate(c.Spec)
			if err != nil {
				t.Fatalf("spec %s: %v", c.Spec, err)
			}
			var goSays []message
			for _, e := range errs {
				goSays = append(goSays, message{field: e.Field, text: e.ErrorBody()})
			}
			for _, side := range []struct {
				name     string
				messages []message
			}{{"API server", server}, {"Validate", goSays}} {
				if diff := cmp.Diff(sorted(c.Fields), sorted(fields(side.messages))); diff != "" {
					t.Errorf("spec %s\n%s reports at fields (-want +got):\n%s%s", c.Spec, side.name, diff, show(side.messages))
				}
				for _, m := range side.messages {
					for _, want := range c.Says {
						if !strings.Contains(m.text, want) {
							t.Errorf("spec %s\n%s says %q at %s, want it to contain %q", c.Spec, side.name, m.text, m.field, want)
						}
					}
				}
			}
		})
	}
}

func fields(messages []message) []string {
	var paths []string
	for _, m := range messages {
		paths = append(paths, m.field)
	}
	return paths
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func show(messages []message) string {
	var b strings.Builder
	for _, m := range messages {
		fmt.Fprintf(&b, "  %s: %s\n", m.field, m.text)
	}
	return b.String()
}

// An invalid policy is rejected with the field in the message, CEL rules included.
func TestAPIServerNamesTheField(t *testing.T) {
	ns := envtest.Namespace(t, env)
	tests := []struct{ spec, want string }{
		{`{"targetRef":{"name":"orders"},"timeout":"1s","retries":{"attempts":1,"perTryTimeout":"2s"}}`, "spec.retries.perTryTimeout"},
		{`{"targetRef":{"name":"orders"},"timeout":"0s"}`, "spec.timeout"},
		{`{"targetRef":{"name":"orders"},"retries":{"attempts":1,"retryOn":["reset","599"]}}`, "spec.retries.retryOn[1]"},
		{`{"targetRef":{"name":"orders"},"retries":{"attempts":0,"retryOn":["reset"]}}`, "spec.retries.retryOn: Forbidden: must be unset when retries.attempts is 0"},
		{`{"targetRef":{"name":"orders"},"split":[{"subset":"v1","labels":{"version":"v1"},"weight":60}]}`, "spec.split weights must sum to 100, not 60"},
		{`{"targetRef":{"name":"orders"},"split":[{"subset":"v1","labels":{"-v":"v1"},"weight":100}]}`, "spec.split[0].labels"},
		{`{"targetRef":{"name":"orders"},"mtls":{"mode":"ON"}}`, "spec.mtls.mode"},
		{`{"targetRef":{"name":"orders"},"allow":[{"namespace":"tools"}]}`, "spec.allow[0].serviceAccount"},
		{`{"targetRef":{"name":"p"},"routes":[{"name":"charge","match":{"grpc":{"method":"Charge"}},"fault":{"abort":{"percentage":10}}}]}`, "spec.routes[0].fault.abort.code: Required value"},
		{`{"targetRef":{"name":"p"},"routes":[{"name":"charge","match":{"grpc":{"method":"Charge"}},"fault":{"delay":{"fixedDelay":"1s","percentage":150}}}]}`, "spec.routes[0].fault.delay.percentage"},
		{`{"targetRef":{"name":"p"},"routes":[{"name":"a","match":{"grpc":{"method":"Charge"}},"timeout":"1s"},{"name":"b","match":{"grpc":{"method":"Charge"}},"timeout":"2s"}]}`, `spec.routes: Invalid value: routes ["a", "b"] match the same calls`},
		{`{"targetRef":{"name":"p"},"routes":[{"name":"a","match":{"http":{}},"timeout":"1s"}]}`, "spec.routes[0].match.http: Invalid value"},
		{`{"targetRef":{"name":"p"},"routes":[{"name":"a","match":{},"timeout":"1s"}]}`, "spec.routes[0].match: Invalid value"},
	}
	for _, tt := range tests {
		err := submit(t, ns, tt.spec)
		if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("spec %s: err = %v, want Invalid naming %q", tt.spec, err, tt.want)
		}
	}
}

// `kubectl explain` shows the API's own field docs: they are the documentation teams read first.
func TestKubectlExplain(t *testing.T) {
	out, err := env.Kubectl(context.Background(), nil, "explain", "trafficpolicy.spec.retries")
	if err != nil {
		t.Fatal(err)
	}
	// kubectl wraps descriptions; compare with whitespace collapsed.
	flat := strings.Join(strings.Fields(out), " ")
	for _, want := range []string{
		"KIND: TrafficPolicy",
		"retries is how callers' proxies retry failed requests",
		"attempts <integer> -required-",
		"0 disables retries explicitly",
		"perTryTimeout <string>",
		"retryOn <[]string>",
	} {
		if !strings.Contains(flat, want) {
			t.Errorf("kubectl explain trafficpolicy.spec.retries lacks %q:\n%s", want, out)
		}
	}
	out, err = env.Kubectl(context.Background(), nil, "explain", "tp.spec")
	if err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{"targetRef", "timeout", "retries", "fault", "routes", "circuitBreaker", "mtls", "split", "allow"} {
		if !strings.Contains(out, fmt.Sprintf("  %s\t<", field)) {
			t.Errorf("kubectl explain tp.spec lacks field %s:\n%s", field, out)
		}
	}
}
