package scenario

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"

	"meshplane.dev/operator/api/v1alpha1"
)

// The security scenarios set who calls: the Mesh's own caller (an mTLS identity), a caller without
// certificates (CallerPlaintext) and callers with other identities (Mesh.Callers), and show what the
// servers did: the calls they handled, by the identity they saw in the TLS handshake.

// WithMTLS sets mtls.mode.
func WithMTLS(mode v1alpha1.MTLSMode) func(*v1alpha1.TrafficPolicySpec) {
	return func(s *v1alpha1.TrafficPolicySpec) { s.MTLS = &v1alpha1.MTLS{Mode: mode} }
}

// WithAllow sets allow to the service accounts, in the policy's namespace.
func WithAllow(serviceAccounts ...string) func(*v1alpha1.TrafficPolicySpec) {
	return func(s *v1alpha1.TrafficPolicySpec) {
		s.Allow = nil
		for _, sa := range serviceAccounts {
			s.Allow = append(s.Allow, v1alpha1.Caller{ServiceAccount: sa})
		}
	}
}

// serviceAccountOf returns the service account of a SPIFFE id (spiffe://<td>/ns/<ns>/sa/<sa>).
func serviceAccountOf(id string) string {
	_, sa, _ := strings.Cut(id, "/sa/")
	return sa
}

// allServed predicts every call OK, each handled by a server that saw the caller as identity (a SPIFFE
// id, or "plaintext").
func allServed(field, identity string) func(Observed) Prediction {
	return func(o Observed) Prediction {
		p := Prediction{Expected: fmt.Sprintf("all OK; the servers saw %s", identity), Measured: "server saw " + peers(o.Peers)}
		if o.OK != o.Calls || o.Peers[identity] != o.Calls || len(o.Peers) != 1 {
			p.Err = fmt.Errorf("%s: %d of %d OK (codes %v), the servers saw %s; want all OK, seen as %s", field, o.OK, o.Calls, o.Codes, peers(o.Peers), identity)
		}
		return p
	}
}

// allRefused predicts every call failing with code (any code when code is OK) and no server handling
// any: the refusal happened before the service's own code.
func allRefused(field, why string, code codes.Code) func(Observed) Prediction {
	return func(o Observed) Prediction {
		want := "all refused"
		if code != codes.OK {
			want = "all " + codeName(code)
		}
		p := Prediction{Expected: want + ", none handled (" + why + ")", Measured: "server saw " + peers(o.Peers)}
		switch {
		case o.OK > 0 || o.Attempts() > 0:
			p.Err = fmt.Errorf("%s: %d of %d OK, %d handled by the servers; want none (%s)", field, o.OK, o.Calls, o.Attempts(), why)
		case code != codes.OK && o.Codes[code] != o.Calls:
			p.Err = fmt.Errorf("%s: codes %v; want all %d %s", field, o.Codes, o.Calls, codeName(code))
		}
		return p
	}
}

func peers(m map[string]int) string {
	if len(m) == 0 {
		return "nothing"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}

// MTLS shows the servers' mutual TLS on real calls. Without mtls and under PERMISSIVE a caller without
// certificates is served in plaintext (istiod gives a gRPC server no TLS unless STRICT); under STRICT
// its handshake is refused before any server code runs, while the Mesh's own caller — told
// ISTIO_MUTUAL by the DestinationRule — is served, and the servers saw its SPIFFE id.
func (m *Mesh) MTLS(calls int) Scenario {
	const field = "PeerAuthentication mtls.mode (server listener DownstreamTlsContext) + DestinationRule tls ISTIO_MUTUAL (callers)"
	return Scenario{Name: "mtls", Field: field, Steps: []Step{
		{Label: "no mtls, caller without certificate", Policy: m.Policy(NoRetries), Caller: CallerPlaintext,
			Calls: calls, Concurrency: 4, Predict: allServed(field, "plaintext")},
		{Label: "mtls PERMISSIVE, caller without certificate", Policy: m.Policy(NoRetries, WithMTLS(v1alpha1.MTLSPermissive)), Caller: CallerPlaintext,
			Calls: calls, Concurrency: 4, Predict: allServed(field, "plaintext")},
		{Label: "mtls STRICT, caller without certificate", Policy: m.Policy(NoRetries, WithMTLS(v1alpha1.MTLSStrict)), Caller: CallerPlaintext,
			Calls: calls, Concurrency: 4, Predict: allRefused(field, "no client certificate", codes.Unavailable)},
		{Label: "mtls STRICT, mTLS caller", Policy: m.Policy(NoRetries, WithMTLS(v1alpha1.MTLSStrict)),
			Calls: calls, Concurrency: 4, Predict: allServed(field, m.CallerIdentity)},
	}}
}

// Allow shows an allow list on real calls, under STRICT (identities are mTLS identities): with allow
// listing only caller's service account, caller is served and the Mesh's own caller, another identity,
// gets PERMISSION_DENIED from the servers' RBAC before any service code runs; without allow both are
// served. caller names one of Mesh.Callers.
func (m *Mesh) Allow(caller string, calls int) Scenario {
	const field = "AuthorizationPolicy ALLOW source.principals (server RBAC)"
	listed := serviceAccountOf(m.Callers[caller].Identity)
	other := serviceAccountOf(m.CallerIdentity)
	allow := m.Policy(NoRetries, WithMTLS(v1alpha1.MTLSStrict), WithAllow(listed))
	open := m.Policy(NoRetries, WithMTLS(v1alpha1.MTLSStrict))
	return Scenario{Name: "allow", Field: field, Steps: []Step{
		{Label: fmt.Sprintf("allow [%s], caller %s", listed, listed), Policy: allow, Caller: caller,
			Calls: calls, Concurrency: 4, Predict: allServed(field, m.Callers[caller].Identity)},
		{Label: fmt.Sprintf("allow [%s], caller %s", listed, other), Policy: allow,
			Calls: calls, Concurrency: 4, Predict: allRefused(field, other+" is not listed", codes.PermissionDenied)},
		{Label: fmt.Sprintf("no allow, caller %s", listed), Policy: open, Caller: caller,
			Calls: calls, Concurrency: 4, Predict: allServed(field, m.Callers[caller].Identity)},
		{Label: fmt.Sprintf("no allow, caller %s", other), Policy: open,
			Calls: calls, Concurrency: 4, Predict: allServed(field, m.CallerIdentity)},
	}}
}
