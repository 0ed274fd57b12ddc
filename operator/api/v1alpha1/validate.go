package v1alpha1

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/validate/content"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// The rules below mirror the CRD's markers and CEL rules one for one, so `meshplane render` rejects
// offline exactly what the API server rejects; a differential test against a real API server keeps the
// two in step. Keep each check next to the marker it mirrors when changing either.

var durationPattern = regexp.MustCompile(`^([0-9]{1,5}(h|m|s|ms)){1,4}$`)

// Parse returns the duration d denotes, or an error if it is not written as the API requires.
func (d Duration) Parse() (time.Duration, error) {
	if !durationPattern.MatchString(string(d)) {
		return 0, fmt.Errorf("%q is not a duration such as 3s, 500ms or 1m30s", string(d))
	}
	return time.ParseDuration(string(d))
}

// RetryConditions are the retry-on tokens Istio accepts besides HTTP status codes (istio/istio
// pkg/config/validation: supportedRetryOnPolicies).
var RetryConditions = []string{
	"5xx", "gateway-error", "reset", "reset-before-request", "connect-failure", "retriable-4xx",
	"refused-stream", "retriable-status-codes", "retriable-headers", "envoy-ratelimited",
	"http3-post-connect-failure", "cancelled", "deadline-exceeded", "internal", "resource-exhausted",
	"unavailable",
}

// retryStatusCodes are the 4xx/5xx codes Go's http.StatusText knows, which is what Istio accepts as a
// retry-on status code; the CRD's CEL rule lists the same set.
var retryStatusCodes = []int{
	400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 418, 421,
	422, 423, 424, 425, 426, 428, 429, 431, 451, 500, 501, 502, 503, 504, 505, 506, 507, 508, 510, 511,
}

var statusCodePattern = regexp.MustCompile(`^[45][0-9][0-9]$`)

// Valid reports whether c is a retry-on token or status code Istio accepts.
func (c RetryCondition) Valid() bool {
	if slices.Contains(RetryConditions, string(c)) {
		return true
	}
	if !statusCodePattern.MatchString(string(c)) {
		return false
	}
	code, _ := strconv.Atoi(string(c))
	return slices.Contains(retryStatusCodes, code)
}

// Validate returns every rule p's spec breaks, with field paths such as spec.retries.perTryTimeout.
func (p *TrafficPolicy) Validate() field.ErrorList {
	return p.Spec.Validate(field.NewPath("spec"))
}

// Validate returns every rule s breaks, with field paths below path.
func (s *TrafficPolicySpec) Validate(path *field.Path) field.ErrorList {
	var errs field.ErrorList
	errs = append(errs, s.TargetRef.validate(path.Child("targetRef"))...)
	if s.Timeout != nil {
		errs = append(errs, s.Timeout.validate(path.Child("timeout"))...)
	}
	if s.Retries != nil {
		errs = append(errs, s.Retries.validate(path.Child("retries"))...)
		errs = append(errs, validatePerTryWithinTimeout(s.Timeout, s.Retries, path.Child("retries", "perTryTimeout"),
			"spec.retries.perTryTimeout must not exceed spec.timeout (%s): each attempt must fit in the whole request")...)
	}
	if s.Fault != nil {
		errs = append(errs, s.Fault.validate(path.Child("fault"))...)
	}
	if s.Routes != nil {
		errs = append(errs, validateRoutes(s, path.Child("routes"))...)
	}
	if s.CircuitBreaker != nil {
		errs = append(errs, s.CircuitBreaker.validate(path.Child("circuitBreaker"))...)
	}
	if s.MTLS != nil {
		errs = append(errs, s.MTLS.validate(path.Child("mtls"))...)
	}
	if s.Split != nil {
		errs = append(errs, validateSplit(s.Split, path.Child("split"))...)
	}
	if s.Allow != nil {
		errs = append(errs, validateAllow(s.Allow, path.Child("allow"))...)
	}
	if s.Canary != nil {
		errs = append(errs, validateCanary(s, path)...)
	}
	return errs
}

func (r TargetRef) validate(path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if r.Kind != "" && r.Kind != "Service" {
		errs = append(errs, field.NotSupported(path.Child("kind"), r.Kind, []string{"Service"}))
	}
	name := path.Child("name")
	if r.Name == "" {
		errs = append(errs, field.Required(name, "the Service this policy governs"))
	} else {
		for _, msg := range validation.IsDNS1035Label(r.Name) {
			errs = append(errs, field.Invalid(name, r.Name, "must be a Service name: "+msg))
		}
	}
	return errs
}

// durationMaxLength is the CRD's maxLength of a duration, which bounds CEL's cost estimate.
const durationMaxLength = 32

func (d Duration) validate(path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if len(d) > durationMaxLength {
		errs = append(errs, field.TooLong(path, string(d), durationMaxLength))
	}
	v, err := d.Parse()
	if err != nil {
		return append(errs, field.Invalid(path, string(d), "must be a duration such as 3s, 500ms or 1m30s (digits followed by h, m, s or ms)"))
	}
	if v < time.Millisecond {
		return field.ErrorList{field.Invalid(path, string(d), "must be at least 1ms")}
	}
	return nil
}

func (r *Retries) validate(path *field.Path) field.ErrorList {
	var errs field.ErrorList
	attempts := path.Child("attempts")
	switch {
	case r.Attempts == nil:
		errs = append(errs, field.Required(attempts, "the number of retries after the first try; 0 disables retries"))
	case *r.Attempts < 0 || *r.Attempts > 10:
		errs = append(errs, field.Invalid(attempts, *r.Attempts, "must be between 0 and 10"))
	}
	if r.PerTryTimeout != nil {
		errs = append(errs, r.PerTryTimeout.validate(path.Child("perTryTimeout"))...)
	}
	if r.RetryOn != nil {
		retryOn := path.Child("retryOn")
		switch {
		case len(r.RetryOn) == 0:
			errs = append(errs, field.Required(retryOn, "list at least one condition, or leave retryOn unset"))
		case len(r.RetryOn) > 20:
			errs = append(errs, field.TooMany(retryOn, len(r.RetryOn), 20))
		}
		for i, c := range r.RetryOn {
			p := retryOn.Index(i)
			if len(c) > 32 {
				errs = append(errs, field.TooLong(p, string(c), 32))
			}
			if !c.Valid() {
				errs = append(errs, field.Invalid(p, string(c), "must be an Istio retry condition ("+strings.Join(RetryConditions, ", ")+") or a 4xx/5xx HTTP status code"))
			}
			if slices.Contains(r.RetryOn[:i], c) {
				errs = append(errs, field.Duplicate(p, string(c)))
			}
		}
	}
	if r.Attempts != nil && *r.Attempts == 0 {
		const why = "must be unset when retries.attempts is 0 (retries disabled)"
		if r.PerTryTimeout != nil {
			errs = append(errs, field.Forbidden(path.Child("perTryTimeout"), why))
		}
		if r.RetryOn != nil {
			errs = append(errs, field.Forbidden(path.Child("retryOn"), why))
		}
	}
	return errs
}

// validatePerTryWithinTimeout reports r's perTryTimeout when it exceeds timeout, both well-formed (a
// malformed one is reported on its own); message takes the timeout.
func validatePerTryWithinTimeout(timeout *Duration, r *Retries, path *field.Path, message string) field.ErrorList {
	if timeout == nil || r == nil || r.PerTryTimeout == nil {
		return nil
	}
	t, ok1 := timeout.wellFormed()
	perTry, ok2 := r.PerTryTimeout.wellFormed()
	if ok1 && ok2 && perTry > t {
		return field.ErrorList{field.Invalid(path, string(*r.PerTryTimeout), fmt.Sprintf(message, *timeout))}
	}
	return nil
}

// wellFormed returns the duration d denotes and true when it is valid: written as the API requires and
// at least 1ms. Rules comparing durations check only well-formed ones, as the CRD's CEL rules do.
func (d Duration) wellFormed() (time.Duration, bool) {
	v, err := d.Parse()
	return v, err == nil && v >= time.Millisecond && len(d) <= durationMaxLength
}

func (c *CircuitBreaker) validate(path *field.Path) field.ErrorList {
	var errs field.ErrorList
	counts := []struct {
		name string
		v    *int32
	}{
		{"maxConnections", c.MaxConnections},
		{"maxPendingRequests", c.MaxPendingRequests},
		{"maxRequests", c.MaxRequests},
		{"maxRequestsPerConnection", c.MaxRequestsPerConnection},
		{"maxRetries", c.MaxRetries},
		{"consecutiveErrors", c.ConsecutiveErrors},
	}
	set := 0
	for _, n := range counts {
		if n.v == nil {
			continue
		}
		set++
		if *n.v < 0 {
			errs = append(errs, field.Invalid(path.Child(n.name), *n.v, "must not be negative"))
		}
	}
	if c.Interval != nil {
		set++
		errs = append(errs, c.Interval.validate(path.Child("interval"))...)
	}
	if c.BaseEjectionTime != nil {
		set++
		errs = append(errs, c.BaseEjectionTime.validate(path.Child("baseEjectionTime"))...)
	}
	if c.MaxEjectionPercent != nil {
		set++
		if v := *c.MaxEjectionPercent; v < 1 || v > 100 {
			errs = append(errs, field.Invalid(path.Child("maxEjectionPercent"), v, "must be between 1 and 100 (Istio reads 0 as its 10% default; set consecutiveErrors: 0 to stop ejecting)"))
		}
	}
	if set == 0 {
		errs = append(errs, field.Required(path, "set at least one field, or leave circuitBreaker unset"))
	}
	return errs
}

func (m *MTLS) validate(path *field.Path) field.ErrorList {
	modes := []MTLSMode{MTLSStrict, MTLSPermissive, MTLSDisable}
	switch {
	case m.Mode == "":
		return field.ErrorList{field.Required(path.Child("mode"), "one of STRICT, PERMISSIVE, DISABLE")}
	case !slices.Contains(modes, m.Mode):
		return field.ErrorList{field.NotSupported(path.Child("mode"), m.Mode, modes)}
	}
	return nil
}

func validateSplit(split []Subset, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	switch {
	case len(split) == 0:
		return field.ErrorList{field.Required(path, "list at least one subset, or leave split unset")}
	case len(split) > 10:
		errs = append(errs, field.TooMany(path, len(split), 10))
	}
	// The sum is checked only when every weight is set and in range, as the CRD's rule does: a missing or
	// out-of-range weight is reported once, at the weight, and not again as a sum it distorts.
	sum, weightsValid := int32(0), true
	for i, s := range split {
		p := path.Index(i)
		name := p.Child("subset")
		if s.Subset == "" {
			errs = append(errs, field.Required(name, "a DNS label naming the subset"))
		} else {
			for _, msg := range content.IsDNS1123Label(s.Subset) {
				errs = append(errs, field.Invalid(name, s.Subset, msg))
			}
		}
		if slices.ContainsFunc(split[:i], func(o Subset) bool { return o.Subset == s.Subset }) {
			errs = append(errs, field.Duplicate(name, s.Subset))
		}
		labels := p.Child("labels")
		switch {
		case s.Labels == nil:
			errs = append(errs, field.Required(labels, "the pod labels that select the subset, e.g. {version: v2}"))
		case len(s.Labels) == 0:
			errs = append(errs, field.Required(labels, "at least one label"))
		case len(s.Labels) > 8:
			errs = append(errs, field.TooMany(labels, len(s.Labels), 8))
		}
		for _, k := range sortedKeys(s.Labels) {
			// A bad key is reported at labels, as the CRD's rule does (and Kubernetes for metadata.labels):
			// labels[k] would name the value under the key.
			if msgs := content.IsLabelKey(k); len(msgs) > 0 {
				errs = append(errs, field.Invalid(labels, k, "must be a valid label key: "+strings.Join(msgs, "; ")))
			}
			for _, msg := range content.IsLabelValue(string(s.Labels[k])) {
				errs = append(errs, field.Invalid(labels.Key(k), string(s.Labels[k]), "must be a valid label value: "+msg))
			}
		}
		weight := p.Child("weight")
		switch {
		case s.Weight == nil:
			weightsValid = false
			errs = append(errs, field.Required(weight, "the percentage of requests, 0 to 100"))
		case *s.Weight < 0 || *s.Weight > 100:
			weightsValid = false
			errs = append(errs, field.Invalid(weight, *s.Weight, "must be between 0 and 100"))
		default:
			sum += *s.Weight
		}
	}
	if weightsValid && sum != 100 {
		errs = append(errs, field.Invalid(path, sum, "spec.split weights must sum to 100"))
	}
	return errs
}

func validateAllow(allow []Caller, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	switch {
	case len(allow) == 0:
		return field.ErrorList{field.Required(path, "list at least one caller, or leave allow unset")}
	case len(allow) > 64:
		errs = append(errs, field.TooMany(path, len(allow), 64))
	}
	for i, c := range allow {
		p := path.Index(i)
		sa := p.Child("serviceAccount")
		if c.ServiceAccount == "" {
			errs = append(errs, field.Required(sa, "the caller's service account name"))
		} else {
			for _, msg := range content.IsDNS1123Subdomain(c.ServiceAccount) {
				errs = append(errs, field.Invalid(sa, c.ServiceAccount, msg))
			}
		}
		if c.Namespace != "" {
			for _, msg := range content.IsDNS1123Label(c.Namespace) {
				errs = append(errs, field.Invalid(p.Child("namespace"), c.Namespace, msg))
			}
		}
	}
	return errs
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
