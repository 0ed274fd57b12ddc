// Package consulsync syncs the service catalog both ways between Kubernetes and Consul: Kubernetes
// Services (their ready EndpointSlice addresses) are registered in Consul on a synthetic node per cluster,
// and Consul services that did not come from Kubernetes become Istio ServiceEntries, so mesh policy can
// reach them. Both directions are idempotent: they write only differences, and never touch what they do
// not own.
package consulsync

import (
	"errors"
	"flag"
	"fmt"
	"slices"
	"strings"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	ctrl "sigs.k8s.io/controller-runtime"
)

// Options configure the sync; the zero value (no address) disables it.
type Options struct {
	// Address of Consul's HTTP API (host:port or URL). Empty disables both directions.
	Address string
	// ToConsul enables Kubernetes → Consul.
	ToConsul bool
	// ToIstio enables Consul → Istio ServiceEntries.
	ToIstio bool
	// Cluster names this cluster in Consul meta and owns its registrations.
	Cluster string
	// Node is the synthetic Consul node; empty means "k8s-<cluster>".
	Node string
	// DefaultSync syncs Services without the consul.meshplane.dev/sync annotation.
	DefaultSync bool
	// NamespaceSuffix registers Services as <name>-<namespace>.
	NamespaceSuffix bool
	// Mode is "endpoints" (one instance per ready pod address) or "clusterip".
	Mode string
	// ServiceEntryNamespace receives the ServiceEntries of imported Consul services.
	ServiceEntryNamespace string
	// ResyncPeriod re-checks everything against Consul this often; 0 disables.
	ResyncPeriod time.Duration
	// DenyNamespaces are namespaces whose Services never go to Consul, annotated or not.
	DenyNamespaces []string
}

// systemNamespaces are the namespaces Kubernetes itself creates and fills: --consul-deny-namespaces'
// default. consul-k8s' Helm chart denies kube-system and kube-public by default; kube-node-lease holds
// only Leases, denied so that no Service placed there by accident is published. istio-system is not
// among them: it is not Kubernetes', and its gateways are what Consul-side clients call to reach the
// mesh, so a gateway Service there must be able to opt in with the annotation (a deny list would
// overrule it). With --consul-sync-default=true, istiod is synced unless annotated "false".
var systemNamespaces = []string{metav1.NamespaceSystem, metav1.NamespacePublic, corev1.NamespaceNodeLease}

// namespaceList is a comma-separated flag value.
type namespaceList []string

func (l *namespaceList) String() string { return strings.Join(*l, ",") }

func (l *namespaceList) Set(v string) error {
	*l = nil
	for ns := range strings.SplitSeq(v, ",") {
		if ns = strings.TrimSpace(ns); ns != "" {
			*l = append(*l, ns)
		}
	}
	return nil
}

// BindFlags registers the sync's flags on fs with their defaults.
func (o *Options) BindFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.Address, "consul-address", "", "Consul HTTP API address (host:port); empty disables the Consul catalog sync. The token comes from CONSUL_HTTP_TOKEN, as for the consul CLI.")
	fs.BoolVar(&o.ToConsul, "consul-sync-to-consul", true, "Register Kubernetes Services (ready EndpointSlice addresses) in Consul.")
	fs.BoolVar(&o.ToIstio, "consul-sync-to-istio", true, "Mirror Consul services that did not come from Kubernetes as Istio ServiceEntries.")
	fs.StringVar(&o.Cluster, "cluster-name", "default", "Name of this cluster: in Consul meta, the synthetic node name, and the owner mark of every registration the sync may delete.")
	fs.StringVar(&o.Node, "consul-node-name", "", "Synthetic Consul node holding the registrations (default k8s-<cluster-name>).")
	fs.BoolVar(&o.DefaultSync, "consul-sync-default", true, "Sync Services that carry no consul.meshplane.dev/sync annotation (false: opt-in with \"true\").")
	fs.BoolVar(&o.NamespaceSuffix, "consul-add-namespace-suffix", false, "Register Services as <name>-<namespace>, so equal names in two namespaces stay apart.")
	fs.StringVar(&o.Mode, "consul-sync-mode", string(ModeEndpoints), "What a Consul instance is: endpoints (one per ready pod address, health from readiness) or clusterip (one at the ClusterIP).")
	fs.StringVar(&o.ServiceEntryNamespace, "consul-serviceentry-namespace", "istio-system", "Namespace for the ServiceEntries of imported Consul services.")
	fs.DurationVar(&o.ResyncPeriod, "consul-resync-period", 10*time.Minute, "Re-check every Service against Consul this often (changes are followed at once; this catches what was missed).")
	o.DenyNamespaces = slices.Clone(systemNamespaces)
	fs.Var((*namespaceList)(&o.DenyNamespaces), "consul-deny-namespaces", "Comma-separated `namespaces` whose Services are never synced to Consul, even when annotated consul.meshplane.dev/sync: \"true\"; empty denies none.")
}

// Validate reports bad options naming the flag.
func (o Options) Validate() error {
	var errs []error
	if o.Address == "" {
		return nil
	}
	if o.Mode != string(ModeEndpoints) && o.Mode != string(ModeClusterIP) {
		errs = append(errs, fmt.Errorf("--consul-sync-mode: invalid value %q: want endpoints or clusterip", o.Mode))
	}
	if o.Cluster == "" {
		errs = append(errs, errors.New("--cluster-name: must not be empty"))
	}
	if o.ToIstio && o.ServiceEntryNamespace == "" {
		errs = append(errs, errors.New("--consul-serviceentry-namespace: must not be empty"))
	}
	if o.ResyncPeriod < 0 {
		errs = append(errs, fmt.Errorf("--consul-resync-period: must not be negative, got %s", o.ResyncPeriod))
	}
	for _, ns := range o.DenyNamespaces {
		if msgs := validation.IsDNS1123Label(ns); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("--consul-deny-namespaces: %q is not a namespace name: %s", ns, strings.Join(msgs, "; ")))
		}
	}
	return errors.Join(errs...)
}

// Sync is the running sync's parts; a direction that is off is nil.
type Sync struct {
	ToConsul *ToConsul
	ToIstio  *ToIstio
	Metrics  *Metrics
}

// The sync reads Services and EndpointSlices, writes ServiceEntries, and reports bad annotations as
// Events.
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=get;list;watch
// +kubebuilder:rbac:groups=networking.istio.io,resources=serviceentries,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Setup adds the enabled directions to mgr; metrics are registered with reg (the caller unregisters
// them with Sync.Metrics.Unregister when the manager is done). It returns nil when the sync is off.
func Setup(mgr ctrl.Manager, o Options, reg prometheus.Registerer) (*Sync, error) {
	if o.Address == "" {
		return nil, nil
	}
	if err := o.Validate(); err != nil {
		return nil, err
	}
	consul, err := consulapi.NewClient(&consulapi.Config{Address: o.Address})
	if err != nil {
		return nil, fmt.Errorf("consul client: %w", err)
	}
	metrics := NewMetrics()
	if err := metrics.Register(reg); err != nil {
		return nil, err
	}
	s := &Sync{Metrics: metrics}
	if o.ToConsul {
		node := o.Node
		if node == "" {
			node = "k8s-" + o.Cluster
		}
		s.ToConsul = &ToConsul{
			Client: mgr.GetClient(), Consul: consul, Node: node, Metrics: metrics,
			Settings:     Settings{Cluster: o.Cluster, DefaultSync: o.DefaultSync, NamespaceSuffix: o.NamespaceSuffix, Mode: Mode(o.Mode), DenyNamespaces: o.DenyNamespaces},
			Recorder:     mgr.GetEventRecorder("meshplane-consul-sync"),
			ResyncPeriod: o.ResyncPeriod,
		}
		if err := s.ToConsul.SetupWithManager(mgr); err != nil {
			return nil, err
		}
	}
	if o.ToIstio {
		s.ToIstio = &ToIstio{Client: mgr.GetClient(), Consul: consul, Namespace: o.ServiceEntryNamespace, Metrics: metrics}
		if err := mgr.Add(s.ToIstio); err != nil {
			return nil, err
		}
	}
	return s, nil
}
