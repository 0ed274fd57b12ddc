// Package v1alpha1 is the traffic.meshplane.dev/v1alpha1 API: the TrafficPolicy a service team writes to
// declare how traffic to one of its Services behaves. It depends on apimachinery alone, so any program can
// import it.
//
// +kubebuilder:object:generate=true
// +groupName=traffic.meshplane.dev
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupVersion is the group and version of this API.
var GroupVersion = schema.GroupVersion{Group: "traffic.meshplane.dev", Version: "v1alpha1"}

var (
	// SchemeBuilder registers this API's kinds with a scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)
	// AddToScheme adds this API's kinds to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &TrafficPolicy{}, &TrafficPolicyList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
