// Package render is `meshplane render`: it reads TrafficPolicies and Services from YAML, builds the Istio
// objects with the same desiredstate.Build the operator uses, and writes them as YAML in a stable order,
// or the effective policies as a table with the call-graph findings of the policies together. It never writes partial output: either everything renders or
// every problem is reported.
package render

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	goruntime "runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	jsonserializer "k8s.io/apimachinery/pkg/runtime/serializer/json"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	sigsyaml "sigs.k8s.io/yaml"
	yamlv2 "sigs.k8s.io/yaml/goyaml.v2"

	"meshplane.dev/operator/api/v1alpha1"
	"meshplane.dev/operator/internal/callgraph"
	"meshplane.dev/operator/internal/canary"
	"meshplane.dev/operator/internal/desiredstate"
)

// Stdin is the path that reads standard input.
const Stdin = "-"

// Problem is one thing wrong with the input, printed as `FILE: TrafficPolicy NS/NAME: spec.FIELD: message`.
type Problem struct {
	File   string
	Object string // "TrafficPolicy shop/orders", or empty when the document has no identity yet
	Detail string
}

func (p Problem) String() string {
	if p.Object == "" {
		return p.File + ": " + p.Detail
	}
	return p.File + ": " + p.Object + ": " + p.Detail
}

// Problems is every problem found; rendering stops short of output when there is one.
type Problems []Problem

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// Inputs are the documents render reads.
type Inputs struct {
	Policies []Policy
	Services []Service
}

// Policy is a TrafficPolicy and the file it came from.
type Policy struct {
	File string
	*v1alpha1.TrafficPolicy
}

// Service is a Service and the file it came from.
type Service struct {
	File string
	*corev1.Service
}

// Rendered is one policy's generated objects.
type Rendered struct {
	Policy *v1alpha1.TrafficPolicy
	State  *desiredstate.State
}

var (
	scheme  = runtime.NewScheme()
	decoder = jsonserializer.NewSerializerWithOptions(jsonserializer.DefaultMetaFactory, scheme, scheme,
		jsonserializer.SerializerOptions{Strict: true})
	policyGVK  = v1alpha1.GroupVersion.WithKind("TrafficPolicy")
	serviceGVK = corev1.SchemeGroupVersion.WithKind("Service")
)

func init() {
	utilruntime.Must(v1alpha1.AddToScheme(scheme))
	utilruntime.Must(corev1.AddToScheme(scheme))
}

// Load reads every path (a file, a directory of .yaml/.yml/.json files, or Stdin) and decodes the
// TrafficPolicies and Services in them. Other kinds are skipped, so a directory of full manifests
// works; unknown fields and unknown kinds of our own group are problems. Documents without a namespace
// get namespace.
func Load(paths []string, stdin io.Reader, namespace string) (*Inputs, Problems) {
	in := &Inputs{}
	var problems Problems
	for _, path := range paths {
		files, err := expand(path)
		if err != nil {
			problems = append(problems, Problem{File: path, Detail: err.Error()})
			continue
		}
		for _, file := range files {
			var data []byte
			if file == Stdin {
				data, err = io.ReadAll(stdin)
				file = "<stdin>"
			} else {
				data, err = os.ReadFile(file)
			}
			if err != nil {
				problems = append(problems, Problem{File: file, Detail: err.Error()})
				continue
			}
			problems = append(problems, in.decode(file, data, namespace)...)
		}
	}
	return in, problems
}

// expand lists the files a path stands for, in a stable order.
func expand(path string) ([]string, error) {
	if path == Stdin {
		return []string{Stdin}, nil
	}
	info, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !info.IsDir() {
		return []string{path}, nil
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		return nil, err
	}
	var files []string
	for _, e := range entries {
		switch filepath.Ext(e.Name()) {
		case ".yaml", ".yml", ".json":
			if !e.IsDir() {
				files = append(files, filepath.Join(path, e.Name()))
			}
		}
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no .yaml, .yml or .json files in directory")
	}
	return files, nil
}

func (in *Inputs) decode(file string, data []byte, namespace string) Problems {
	var docs [][]byte
	var readProblem Problems
	r := yaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			readProblem = Problems{{File: file, Detail: fmt.Sprintf("document %d: %v", len(docs)+1, err)}}
			break
		}
		docs = append(docs, doc)
	}
	// Documents decode on every core (YAML parsing is most of render's time) and are taken in order.
	results := make([]decoded, len(docs))
	forEach(len(docs), func(i int) { results[i] = decodeDoc(file, i+1, docs[i], namespace) })
	var problems Problems
	for _, d := range results {
		problems = append(problems, d.problems...)
		if d.policy != nil {
			in.Policies = append(in.Policies, Policy{File: file, TrafficPolicy: d.policy})
		}
		if d.service != nil {
			in.Services = append(in.Services, Service{File: file, Service: d.service})
		}
	}
	return append(problems, readProblem...)
}

// decoded is what one document held: a policy, a Service, or nothing, and its problems.
type decoded struct {
	policy   *v1alpha1.TrafficPolicy
	service  *corev1.Service
	problems Problems
}

// decodeDoc decodes document n of file.
func decodeDoc(file string, n int, doc []byte, namespace string) decoded {
	var out decoded
	problem := func(format string, args ...any) decoded {
		out.problems = append(out.problems, Problem{File: file, Detail: fmt.Sprintf("document %d: ", n) + fmt.Sprintf(format, args...)})
		return out
	}
	// The document is converted to JSON once, for its kind and for decoding; one the strict conversion
	// refuses (a duplicate key) goes the lenient way, so Decode reports the problem against its object.
	j, jerr := sigsyaml.YAMLToJSONStrict(doc)
	var tm metav1.TypeMeta
	var err error
	if jerr == nil {
		err = json.Unmarshal(j, &tm)
	} else {
		j, err = nil, sigsyaml.Unmarshal(doc, &tm)
	}
	if err != nil {
		return problem("%v", err)
	}
	if tm.APIVersion == "" && tm.Kind == "" {
		if isEmpty(doc) {
			return out
		}
		return problem("apiVersion and kind are not set")
	}
	gvk := schema.FromAPIVersionAndKind(tm.APIVersion, tm.Kind)
	switch {
	case gvk == policyGVK:
		p := &v1alpha1.TrafficPolicy{}
		found, ok := decodeInto(file, n, doc, j, gvk, p, namespace)
		out.problems = found
		if ok {
			out.policy = p
		}
	case gvk == serviceGVK:
		svc := &corev1.Service{}
		found, ok := decodeInto(file, n, doc, j, gvk, svc, namespace)
		out.problems = found
		if ok {
			out.service = svc
		}
	case gvk.Group == v1alpha1.GroupVersion.Group:
		return problem("unknown kind %s %s (want %s %s)", tm.APIVersion, tm.Kind, v1alpha1.GroupVersion, policyGVK.Kind)
	}
	return out
}

// forEach runs f(0..n-1) on as many goroutines as there are CPUs.
func forEach(n int, f func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(goruntime.GOMAXPROCS(0), n) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				f(i)
			}
		})
	}
	wg.Wait()
}

// decodeInto decodes doc, from its JSON form j if not nil, into obj and defaults its namespace.
func decodeInto(file string, n int, doc, j []byte, gvk schema.GroupVersionKind, obj interface {
	runtime.Object
	metav1.Object
}, namespace string) (Problems, bool) {
	var strict []error
	var err error
	if j != nil {
		strict, err = decodeJSON(j, gvk, obj)
	} else {
		strict, err = Decode(doc, gvk, obj)
	}
	id := gvk.Kind
	if obj.GetName() != "" {
		obj.SetNamespace(cmp.Or(obj.GetNamespace(), namespace))
		id = gvk.Kind + " " + obj.GetNamespace() + "/" + obj.GetName()
	}
	var problems Problems
	for _, e := range strict {
		detail := e.Error()
		if m := strictField.FindStringSubmatch(detail); m != nil {
			detail = m[2] + ": " + m[1] + " field"
		}
		problems = append(problems, Problem{File: file, Object: id, Detail: detail})
	}
	if err != nil {
		return append(problems, Problem{File: file, Object: id, Detail: fmt.Sprintf("document %d: %v", n, err)}), false
	}
	if obj.GetName() == "" {
		return append(problems, Problem{File: file, Object: id, Detail: fmt.Sprintf("document %d: metadata.name: Required value", n)}), false
	}
	return problems, true
}

// Decode decodes a YAML or JSON document of kind gvk into obj the way the API server reads it: field
// names are case-sensitive, whole numbers written as floats (2.0) are integers, and unknown or duplicate
// fields come back as strict errors while the rest of the object still decodes.
func Decode(doc []byte, gvk schema.GroupVersionKind, obj runtime.Object) (strict []error, err error) {
	j, err := sigsyaml.YAMLToJSONStrict(doc)
	if err != nil {
		return nil, err
	}
	return decodeJSON(j, gvk, obj)
}

// decodeJSON is Decode of the document's JSON form.
func decodeJSON(j []byte, gvk schema.GroupVersionKind, obj runtime.Object) (strict []error, err error) {
	fresh := obj.DeepCopyObject()
	_, _, err = decoder.Decode(j, &gvk, obj)
	if s, ok := runtime.AsStrictDecodingError(err); ok {
		return s.Errors(), nil
	}
	if err == nil {
		return nil, nil
	}
	// A type error. The API server reads numbers into int64 or float64 and accepts a float without a
	// fraction as an integer, so normalise like that and try again; report the first error otherwise.
	var v any
	if utiljson.Unmarshal(j, &v) != nil || !wholeFloatsToInts(&v) {
		return nil, err
	}
	normalized, merr := json.Marshal(v)
	if merr != nil {
		return nil, err
	}
	reflect.ValueOf(obj).Elem().Set(reflect.ValueOf(fresh).Elem())
	_, _, err2 := decoder.Decode(normalized, &gvk, obj)
	if s, ok := runtime.AsStrictDecodingError(err2); ok {
		return s.Errors(), nil
	}
	if err2 != nil {
		return nil, err
	}
	return nil, nil
}

// wholeFloatsToInts turns floats without a fraction into int64 in a decoded JSON value and reports
// whether it changed anything.
func wholeFloatsToInts(v *any) bool {
	changed := false
	switch t := (*v).(type) {
	case float64:
		if t == math.Trunc(t) && math.Abs(t) < 1<<63 {
			*v, changed = int64(t), true
		}
	case map[string]any:
		for k, e := range t {
			if wholeFloatsToInts(&e) {
				t[k], changed = e, true
			}
		}
	case []any:
		for i := range t {
			if wholeFloatsToInts(&t[i]) {
				changed = true
			}
		}
	}
	return changed
}

var strictField = regexp.MustCompile(`^(unknown|duplicate) field "(.+)"$`)

func isEmpty(doc []byte) bool {
	for _, line := range strings.Split(string(doc), "\n") {
		if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") {
			return false
		}
	}
	return true
}

// Render builds every policy's objects with defaults. It reports every invalid field, missing Service
// and duplicate target at once, and renders nothing if there is any.
func Render(in *Inputs, d desiredstate.Defaults) ([]Rendered, Problems) {
	services := map[string]*corev1.Service{}
	var problems Problems
	for _, s := range in.Services {
		key := s.Namespace + "/" + s.Name
		if _, dup := services[key]; dup {
			problems = append(problems, Problem{File: s.File, Object: "Service " + key, Detail: "defined more than once"})
		}
		services[key] = s.Service
	}
	var out []Rendered
	for _, c := range policies(in) {
		p := c.policy
		if len(c.problems) > 0 {
			problems = append(problems, c.problems...)
			continue
		}
		state, err := desiredstate.Build(p.TrafficPolicy, services[p.Namespace+"/"+p.Spec.TargetRef.Name], d)
		if err != nil {
			report := func(detail string) {
				problems = append(problems, Problem{File: p.File, Object: "TrafficPolicy " + p.Namespace + "/" + p.Name, Detail: detail})
			}
			if invalid, ok := errors.AsType[*desiredstate.InvalidError](err); ok {
				for _, e := range invalid.Errs {
					report(e.Error())
				}
				continue
			}
			report(err.Error())
			continue
		}
		out = append(out, Rendered{Policy: p.TrafficPolicy, State: state})
	}
	if len(problems) > 0 {
		return nil, problems
	}
	return out, nil
}

// Policies returns the policies that would be in force, valid and one per Service, without building
// anything (so their Services need not be in the input), or every problem of the others as Render
// reports them. `meshplane check` reads policies this way.
func Policies(in *Inputs) ([]*v1alpha1.TrafficPolicy, Problems) {
	var out []*v1alpha1.TrafficPolicy
	var problems Problems
	for _, c := range policies(in) {
		problems = append(problems, c.problems...)
		if len(c.problems) == 0 {
			out = append(out, c.policy.TrafficPolicy)
		}
	}
	if len(problems) > 0 {
		return nil, problems
	}
	return out, nil
}

// checked is one policy and its problems, if any.
type checked struct {
	policy   Policy
	problems Problems
}

// policies sorts the input's policies by namespace/name and finds each one's problems: defined twice,
// invalid fields, a second policy for one Service.
func policies(in *Inputs) []checked {
	sorted := slices.Clone(in.Policies)
	slices.SortStableFunc(sorted, func(a, b Policy) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	targets := map[string]string{}
	out := make([]checked, 0, len(sorted))
	for i, p := range sorted {
		c := checked{policy: p}
		id := "TrafficPolicy " + p.Namespace + "/" + p.Name
		report := func(detail string) {
			c.problems = append(c.problems, Problem{File: p.File, Object: id, Detail: detail})
		}
		if i > 0 && sorted[i-1].Namespace == p.Namespace && sorted[i-1].Name == p.Name {
			report("defined more than once")
			out = append(out, c)
			continue
		}
		errs := p.Validate()
		// One Service takes one policy: the first in name order claims it, valid or not, so a second
		// policy is reported even while the first has problems of its own.
		target := p.Namespace + "/" + p.Spec.TargetRef.Name
		if other, taken := targets[target]; taken {
			errs = append(errs, field.Invalid(field.NewPath("spec", "targetRef", "name"), p.Spec.TargetRef.Name,
				fmt.Sprintf("Service %s is already governed by TrafficPolicy %s; one Service takes one policy", target, other)))
		} else {
			targets[target] = p.Namespace + "/" + p.Name
		}
		for _, e := range errs {
			report(e.Error())
		}
		out = append(out, c)
	}
	return out
}

// WriteYAML writes every generated object as one YAML document, policies in namespace/name order and
// each policy's objects in apply order. Objects are encoded on every core, written in order.
func WriteYAML(w io.Writer, rendered []Rendered) error {
	var objs []client.Object
	for _, r := range rendered {
		objs = append(objs, r.State.Objects()...)
	}
	docs := make([][]byte, len(objs))
	errs := make([]error, len(objs))
	forEach(len(objs), func(i int) {
		u, err := desiredstate.Unstructured(objs[i])
		if err != nil {
			errs[i] = err
			return
		}
		if docs[i], err = yamlv2.Marshal(yamlValue(u.Object)); err != nil {
			errs[i] = fmt.Errorf("encode %s %s/%s: %w", u.GetKind(), u.GetNamespace(), u.GetName(), err)
		}
	})
	var buf bytes.Buffer
	for i, doc := range docs {
		if errs[i] != nil {
			return errs[i]
		}
		buf.WriteString("---\n")
		buf.Write(doc)
	}
	_, err := w.Write(buf.Bytes())
	return err
}

// yamlValue prepares a JSON-decoded value for the YAML encoder so the output is what sigs.k8s.io/yaml's
// Marshal (JSON, then JSON to YAML) writes, without its two extra passes, which were most of render's
// time (`make bench`): keys in byte order as JSON sorts them (the encoder's own order is "natural",
// a2 before a10), whole numbers as integers.
func yamlValue(v any) any {
	switch t := v.(type) {
	case map[string]any:
		keys := slices.Sorted(maps.Keys(t))
		out := make(yamlv2.MapSlice, len(keys))
		for i, k := range keys {
			out[i] = yamlv2.MapItem{Key: k, Value: yamlValue(t[k])}
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = yamlValue(e)
		}
		return out
	case float64:
		if t == math.Trunc(t) && math.Abs(t) < 1<<53 {
			return int64(t)
		}
	}
	return v
}

// CallGraph analyses policies together (see package callgraph): the calls their allow lists declare
// merged with extra (a graph file, calls observed in istiod). Services count as known, so a policy for a
// missing one is reported, when the input holds at least one Service.
func CallGraph(in *Inputs, policies []*v1alpha1.TrafficPolicy, extra callgraph.Graph, d desiredstate.Defaults, opts callgraph.Options) (*callgraph.Report, error) {
	cg := callgraph.Input{Policies: policies, ServicesKnown: len(in.Services) > 0, Defaults: d, Options: opts,
		Graph: callgraph.Merge(callgraph.FromAllow(policies), extra)}
	for _, s := range in.Services {
		svc := callgraph.Service{Namespace: s.Namespace, Name: s.Name}
		cg.Services = append(cg.Services, svc)
		if callgraph.PlainHTTP(s.Service) {
			cg.PlainHTTP = append(cg.PlainHTTP, svc)
		}
	}
	return callgraph.Analyze(cg)
}

// callersTLS says, for the MTLS column, what the DestinationRule tells the Service's callers for each mode.
var callersTLS = map[v1alpha1.MTLSMode]string{
	v1alpha1.MTLSStrict:     "ISTIO_MUTUAL",
	v1alpha1.MTLSPermissive: "auto-mTLS",
	v1alpha1.MTLSDisable:    "plaintext",
}

// strictNote follows the table when a policy is STRICT: the one thing ISTIO_MUTUAL changes for callers.
const strictNote = "\nmtls STRICT: the DestinationRule sets tls.mode ISTIO_MUTUAL, so every caller uses mTLS — proxyless gRPC\n" +
	"callers too, which get no auto-mTLS — and an endpoint without a sidecar is refused rather than called in plaintext.\n"

// WriteExplain writes the effective policy of every rendered policy as a table, then, for policies with
// more than one generated route, every route in the order callers try them (the default route, which the
// first table shows, last), and, when graph is not nil, the call-graph findings.
func WriteExplain(w io.Writer, rendered []Rendered, graph *callgraph.Report) error {
	var table strings.Builder
	table.WriteString("POLICY\tHOST\tTIMEOUT\tRETRIES\tPER-TRY\tRETRY-ON\tWORST-CASE ATTEMPTS\tWORST-CASE WAIT\tMTLS\tFAULT\n")
	var routes strings.Builder
	strict := false
	for _, r := range rendered {
		e := r.State.Effective
		retries := fmt.Sprint(e.Attempts)
		if e.DefaultRetries {
			retries += " (default)"
		}
		mtls := "inherited"
		if m := r.Policy.Spec.MTLS; m != nil {
			mtls = string(m.Mode) + " (callers " + callersTLS[m.Mode] + ")"
			strict = strict || m.Mode == v1alpha1.MTLSStrict
		}
		id := r.Policy.Namespace + "/" + r.Policy.Name
		table.WriteString(strings.Join([]string{id, e.Host,
			cmp.Or(e.Timeout, "none"), retries, cmp.Or(e.PerTryTimeout, "-"), cmp.Or(strings.Join(e.RetryOn, ","), "-"),
			fmt.Sprint(e.WorstCaseAttempts), cmp.Or(e.WorstCaseWait, "unbounded"), mtls, cmp.Or(e.Fault, "-")}, "\t") + "\n")
		for _, rt := range e.Routes {
			routes.WriteString(strings.Join([]string{id, rt.Name, rt.Match, cmp.Or(rt.Timeout, "none"), fmt.Sprint(rt.Attempts),
				cmp.Or(rt.PerTryTimeout, "-"), cmp.Or(strings.Join(rt.RetryOn, ","), "-"), fmt.Sprint(rt.WorstCaseAttempts),
				cmp.Or(rt.WorstCaseWait, "unbounded"), cmp.Or(rt.Fault, "-"), cmp.Or(strings.Join(rt.Inherited, ","), "-"), rt.Note}, "\t") + "\n")
		}
	}
	if err := writeTable(w, table.String()); err != nil {
		return err
	}
	if strict {
		if _, err := io.WriteString(w, strictNote); err != nil {
			return err
		}
	}
	if routes.Len() > 0 {
		if _, err := io.WriteString(w, "\nRoutes, in the order callers try them (the first that matches takes the call):\n"); err != nil {
			return err
		}
		if err := writeTable(w, "POLICY\tROUTE\tMATCH\tTIMEOUT\tRETRIES\tPER-TRY\tRETRY-ON\tWORST-CASE ATTEMPTS\tWORST-CASE WAIT\tFAULT\tINHERITED\tNOTE\n"+routes.String()); err != nil {
			return err
		}
	}
	if err := writeCanaries(w, rendered); err != nil {
		return err
	}
	if graph == nil {
		return nil
	}
	if _, err := io.WriteString(w, "\nCALL GRAPH (the policies together; meshplane check -h)\n"); err != nil {
		return err
	}
	return callgraph.WriteText(w, graph, false)
}

// writeCanaries writes the plan of every policy's canary: its steps, the thresholds it derives from the
// SLO, and how long promotion takes.
func writeCanaries(w io.Writer, rendered []Rendered) error {
	var b strings.Builder
	for _, r := range rendered {
		if r.Policy.Spec.Canary == nil {
			continue
		}
		plan := canary.NewPlan(r.Policy.Spec.Canary)
		fmt.Fprintf(&b, "\nCanary %s/%s (the operator moves the weights; render shows the start, %s at 0%%):\n", r.Policy.Namespace, r.Policy.Name, plan.Candidate)
		for _, line := range plan.Describe() {
			fmt.Fprintf(&b, "  %s\n", line)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func writeTable(w io.Writer, table string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if _, err := io.WriteString(tw, table); err != nil {
		return err
	}
	return tw.Flush()
}
