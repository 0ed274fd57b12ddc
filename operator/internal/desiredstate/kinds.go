package desiredstate

import (
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The kinds a TrafficPolicy generates.
const (
	KindDestinationRule     = "DestinationRule"
	KindVirtualService      = "VirtualService"
	KindPeerAuthentication  = "PeerAuthentication"
	KindAuthorizationPolicy = "AuthorizationPolicy"
)

// Kinds are the generated kinds in apply order: the DestinationRule (whose subsets a new route may need)
// before the VirtualService, then the security policies. Objects and `meshplane render` list objects in
// this order, status lists them in it, and the operator deletes in the reverse order, so a VirtualService
// goes before the DestinationRule whose subsets it routes to.
var Kinds = []string{KindDestinationRule, KindVirtualService, KindPeerAuthentication, KindAuthorizationPolicy}

// New returns an empty object of a generated kind with its apiVersion and kind set, to read one into;
// nil for any other kind.
func New(kind string) client.Object {
	var obj client.Object
	switch kind {
	case KindDestinationRule:
		obj = &networkingv1.DestinationRule{}
		obj.GetObjectKind().SetGroupVersionKind(networkingv1.SchemeGroupVersion.WithKind(kind))
	case KindVirtualService:
		obj = &networkingv1.VirtualService{}
		obj.GetObjectKind().SetGroupVersionKind(networkingv1.SchemeGroupVersion.WithKind(kind))
	case KindPeerAuthentication:
		obj = &securityv1.PeerAuthentication{}
		obj.GetObjectKind().SetGroupVersionKind(securityv1.SchemeGroupVersion.WithKind(kind))
	case KindAuthorizationPolicy:
		obj = &securityv1.AuthorizationPolicy{}
		obj.GetObjectKind().SetGroupVersionKind(securityv1.SchemeGroupVersion.WithKind(kind))
	}
	return obj
}

// Object returns the wanted object of a kind, or nil when the policy wants none of it.
func (s *State) Object(kind string) client.Object {
	switch kind {
	case KindDestinationRule:
		if s.DestinationRule != nil {
			return s.DestinationRule
		}
	case KindVirtualService:
		if s.VirtualService != nil {
			return s.VirtualService
		}
	case KindPeerAuthentication:
		if s.PeerAuthentication != nil {
			return s.PeerAuthentication
		}
	case KindAuthorizationPolicy:
		if s.AuthorizationPolicy != nil {
			return s.AuthorizationPolicy
		}
	}
	return nil
}

// Objects returns the wanted objects in the order of Kinds.
func (s *State) Objects() []client.Object {
	var objs []client.Object
	for _, kind := range Kinds {
		if obj := s.Object(kind); obj != nil {
			objs = append(objs, obj)
		}
	}
	return objs
}
