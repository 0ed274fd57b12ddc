package consulsync

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	consulapi "github.com/hashicorp/consul/api"
	"google.golang.org/protobuf/testing/protocmp"
	networkingapi "istio.io/api/networking/v1alpha3"
	"k8s.io/apimachinery/pkg/util/validation"
)

func entry(addr string, port int, status string, meta map[string]string) *consulapi.ServiceEntry {
	return &consulapi.ServiceEntry{
		Node:    &consulapi.Node{Node: "vm-1", Address: "192.168.1.10"},
		Service: &consulapi.AgentService{ID: addr, Service: "billing", Address: addr, Port: port, Meta: meta},
		Checks:  consulapi.HealthChecks{{Status: status}},
	}
}

func TestDesiredServiceEntry(t *testing.T) {
	entries := []*consulapi.ServiceEntry{
		entry("10.2.0.2", 8080, "passing", map[string]string{"protocol": "http", "version": "v2"}),
		entry("10.2.0.1", 8080, "passing", map[string]string{"protocol": "http", "version": "v1"}),
		entry("10.2.0.3", 8080, "critical", map[string]string{"protocol": "http"}),
		entry("billing.example.com", 8080, "passing", nil), // not an IP: cannot be a STATIC endpoint
		entry("", 9000, "passing", nil),                    // no service address: the node's
	}
	se, err := DesiredServiceEntry("billing", entries, "consul-services")
	if err != nil {
		t.Fatal(err)
	}
	want := &networkingapi.ServiceEntry{
		Hosts:      []string{"billing.service.consul"},
		Location:   networkingapi.ServiceEntry_MESH_INTERNAL,
		Resolution: networkingapi.ServiceEntry_STATIC,
		Ports: []*networkingapi.ServicePort{
			{Number: 8080, Protocol: "HTTP", Name: "http-8080"},
			{Number: 9000, Protocol: "TCP", Name: "tcp-9000"},
		},
		Endpoints: []*networkingapi.WorkloadEntry{
			{Address: "10.2.0.1", Ports: map[string]uint32{"http-8080": 8080}, Labels: map[string]string{"version": "v1"}},
			{Address: "10.2.0.2", Ports: map[string]uint32{"http-8080": 8080}, Labels: map[string]string{"version": "v2"}},
			{Address: "192.168.1.10", Ports: map[string]uint32{"tcp-9000": 9000}},
		},
	}
	if diff := cmp.Diff(want, &se.Spec, protocmp.Transform()); diff != "" {
		t.Errorf("spec (-want +got):\n%s", diff)
	}
	if se.Name != "consul-billing" || se.Namespace != "consul-services" || se.Labels[LabelManagedBy] != "meshplane" || se.Annotations[AnnotationConsulService] != "billing" {
		t.Errorf("metadata = %+v, want consul-billing in consul-services, managed-by meshplane, annotated with the Consul name", se.ObjectMeta)
	}

	// Deterministic: the same instances in another order render the same spec.
	reversed := []*consulapi.ServiceEntry{entries[4], entries[3], entries[2], entries[1], entries[0]}
	again, _ := DesiredServiceEntry("billing", reversed, "consul-services")
	if diff := cmp.Diff(&se.Spec, &again.Spec, protocmp.Transform()); diff != "" {
		t.Errorf("order-dependent output (-first +second):\n%s", diff)
	}
}

func TestServiceEntryName(t *testing.T) {
	for _, name := range []string{"billing", "Billing_API", "legacy.payments", strings.Repeat("x", 80)} {
		got := ServiceEntryName(name)
		if errs := validation.IsDNS1123Label(got); len(errs) > 0 {
			t.Errorf("ServiceEntryName(%q) = %q: %v", name, got, errs)
		}
	}
	if ServiceEntryName("billing") != "consul-billing" {
		t.Errorf("a DNS-safe name keeps its plain form, got %q", ServiceEntryName("billing"))
	}
	if ServiceEntryName("Billing_API") == ServiceEntryName("billing-api") {
		t.Errorf("names that sanitize alike must not collide")
	}
}

func TestImported(t *testing.T) {
	fromK8s := entry("10.1.0.1", 9090, "passing", map[string]string{MetaExternalSource: "kubernetes"})
	vm := entry("10.2.0.1", 8080, "passing", nil)
	tests := []struct {
		name    string
		entries []*consulapi.ServiceEntry
		want    bool
	}{
		{"billing", []*consulapi.ServiceEntry{vm}, true},
		{"orders", []*consulapi.ServiceEntry{fromK8s}, false},
		{"mixed", []*consulapi.ServiceEntry{vm, fromK8s}, false},
		{"consul", []*consulapi.ServiceEntry{vm}, false},
		{"empty", nil, false},
	}
	for _, tt := range tests {
		if got := Imported(tt.name, tt.entries); got != tt.want {
			t.Errorf("Imported(%s) = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestDesiredServiceEntryRejectsBadHost(t *testing.T) {
	_, err := DesiredServiceEntry("bad_name", []*consulapi.ServiceEntry{entry("10.2.0.1", 80, "passing", nil)}, "ns")
	if err == nil || !strings.Contains(err.Error(), `consul service "bad_name"`) {
		t.Fatalf("err = %v, want an error naming the consul service", err)
	}
}
