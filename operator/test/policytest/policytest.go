// Package policytest builds TrafficPolicies and Services for tests, and holds the table of valid and
// invalid specs that both the API server (CRD markers and CEL) and v1alpha1's Validate must judge alike.
// Only tests import it.
package policytest

import (
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"meshplane.dev/operator/api/v1alpha1"
	"meshplane.dev/operator/internal/render"
)

// Option changes a policy under construction.
type Option func(*v1alpha1.TrafficPolicy)

// Policy returns a TrafficPolicy named name in ns that targets the Service of the same name, changed by
// opts.
func Policy(ns, name string, opts ...Option) *v1alpha1.TrafficPolicy {
	p := &v1alpha1.TrafficPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "TrafficPolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       v1alpha1.TrafficPolicySpec{TargetRef: v1alpha1.TargetRef{Kind: "Service", Name: name}},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

// Target points the policy at another Service.
func Target(service string) Option {
	return func(p *v1alpha1.TrafficPolicy) { p.Spec.TargetRef.Name = service }
}

// Timeout sets spec.timeout.
func Timeout(d string) Option {
	return func(p *v1alpha1.TrafficPolicy) { p.Spec.Timeout = Duration(d) }
}

// Retries sets spec.retries; perTry may be empty.
func Retries(attempts int32, perTry string, retryOn ...v1alpha1.RetryCondition) Option {
	return func(p *v1alpha1.TrafficPolicy) {
		r := &v1alpha1.Retries{Attempts: &attempts, RetryOn: retryOn}
		if perTry != "" {
			r.PerTryTimeout = Duration(perTry)
		}
		p.Spec.Retries = r
	}
}

// CircuitBreaker sets spec.circuitBreaker.
func CircuitBreaker(cb v1alpha1.CircuitBreaker) Option {
	return func(p *v1alpha1.TrafficPolicy) { p.Spec.CircuitBreaker = &cb }
}

// MTLS sets spec.mtls.mode.
func MTLS(mode v1alpha1.MTLSMode) Option {
	return func(p *v1alpha1.TrafficPolicy) { p.Spec.MTLS = &v1alpha1.MTLS{Mode: mode} }
}

// Split sets spec.split from alternating subset names and weights; each subset selects version=<name>.
func Split(subsetsAndWeights ...any) Option {
	return func(p *v1alpha1.TrafficPolicy) {
		p.Spec.Split = nil
		for i := 0; i+1 < len(subsetsAndWeights); i += 2 {
			name := subsetsAndWeights[i].(string)
			w := int32(subsetsAndWeights[i+1].(int))
			p.Spec.Split = append(p.Spec.Split, v1alpha1.Subset{
				Subset: name, Labels: map[string]v1alpha1.LabelValue{"version": v1alpha1.LabelValue(name)}, Weight: &w,
			})
		}
	}
}

// Canary sets spec.canary from subset stable to candidate over steps, every interval, with an analysis
// for tests: objective 99.9, maxBurnRate 10 (1% errors), minRequests 10, scrapeInterval 1s. Set the split
// first (stable at 100); change adjusts the canary further.
func Canary(stable, candidate, interval string, steps []int32, change ...func(*v1alpha1.Canary)) Option {
	return func(p *v1alpha1.TrafficPolicy) {
		c := &v1alpha1.Canary{Stable: stable, Candidate: candidate, Steps: steps, Interval: v1alpha1.Duration(interval),
			Analysis: v1alpha1.CanaryAnalysis{Objective: "99.9", MaxBurnRate: "10", MinRequests: Int32(10), ScrapeInterval: Duration("1s")}}
		for _, f := range change {
			f(c)
		}
		p.Spec.Canary = c
	}
}

// Allow sets spec.allow from "sa" or "namespace/sa" strings.
func Allow(callers ...string) Option {
	return func(p *v1alpha1.TrafficPolicy) {
		p.Spec.Allow = nil
		for _, c := range callers {
			var caller v1alpha1.Caller
			if ns, sa, ok := strings.Cut(c, "/"); ok {
				caller = v1alpha1.Caller{Namespace: ns, ServiceAccount: sa}
			} else {
				caller = v1alpha1.Caller{ServiceAccount: c}
			}
			p.Spec.Allow = append(p.Spec.Allow, caller)
		}
	}
}

// Duration returns a pointer to d.
func Duration(d string) *v1alpha1.Duration {
	v := v1alpha1.Duration(d)
	return &v
}

// Int32 returns a pointer to v.
func Int32(v int32) *int32 { return &v }

// Service returns a Service named name in ns selecting app=<name>, with one HTTP port.
func Service(ns, name string) *corev1.Service {
	return &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 8080}},
		},
	}
}

// Document returns the JSON of a TrafficPolicy named name in ns with spec as its raw JSON spec: the exact
// bytes a differential test sends to the API server.
func Document(ns, name, spec string) []byte {
	return fmt.Appendf(nil, `{"apiVersion":%q,"kind":"TrafficPolicy","metadata":{"name":%q,"namespace":%q},"spec":%s}`,
		v1alpha1.GroupVersion.String(), name, ns, spec)
}

// Decode decodes a TrafficPolicy document as `meshplane render` does, which is as strictly as the API
// server with fieldValidation=Strict: case-sensitive field names, unknown and duplicate fields are
// errors.
func Decode(doc []byte) (*v1alpha1.TrafficPolicy, error) {
	p := &v1alpha1.TrafficPolicy{}
	strict, err := render.Decode(doc, v1alpha1.GroupVersion.WithKind("TrafficPolicy"), p)
	if err != nil {
		return nil, err
	}
	if len(strict) > 0 {
		return nil, errors.Join(strict...)
	}
	return p, nil
}

// Accepts reports whether Meshplane's Go code accepts a spec: it decodes strictly and Validate finds
// nothing. The API server must agree.
func Accepts(spec string) (bool, string) {
	errs, err := Validate(spec)
	if err != nil {
		return false, err.Error()
	}
	if len(errs) > 0 {
		return false, errs.ToAggregate().Error()
	}
	return true, ""
}

// Validate decodes a spec as Accepts does and returns what Validate finds in it, or the decoding error.
func Validate(spec string) (field.ErrorList, error) {
	p, err := Decode(Document("ns", "p", spec))
	if err != nil {
		return nil, err
	}
	return p.Validate(), nil
}
