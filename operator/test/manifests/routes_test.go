package manifests

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"k8s.io/apimachinery/pkg/runtime"

	"meshplane.dev/operator/api/v1alpha1"
	// The shop's gRPC services, registered for their descriptors.
	_ "meshplane.dev/services/proto/catalog/v1"
	_ "meshplane.dev/services/proto/orders/v1"
	_ "meshplane.dev/services/proto/payments/v1"
)

// A route that never matches is a mistake nobody sees: the operator cannot know a Service's methods.
// The example policies' routes must each take some real call: a gRPC method or service the shop's
// protos define, an HTTP path and method the gateway serves (its ServeMux patterns, read from its
// source).
func TestExampleRoutesMatchRealCalls(t *testing.T) {
	gateway := gatewayMux(t)
	routes := 0
	for _, u := range rendered(t, "dev").objs {
		if u.GetKind() != "TrafficPolicy" {
			continue
		}
		var p v1alpha1.TrafficPolicy
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &p); err != nil {
			t.Fatal(err)
		}
		for _, r := range p.Spec.Routes {
			routes++
			id := p.Name + " route " + r.Name
			switch m := r.Match; {
			case m.GRPC != nil && m.GRPC.Service != "":
				if _, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(m.GRPC.Service)); err != nil {
					t.Errorf("%s: no gRPC service %s in the shop's protos", id, m.GRPC.Service)
				}
			case m.GRPC != nil:
				if !grpcMethodExists(m.GRPC.Method) {
					t.Errorf("%s: no gRPC method %s in the shop's protos", id, m.GRPC.Method)
				}
			case m.HTTP != nil:
				if p.Spec.TargetRef.Name != "gateway" {
					t.Errorf("%s: HTTP route on %s, which serves only gRPC", id, p.Spec.TargetRef.Name)
					continue
				}
				if !servesSome(gateway, m.HTTP) {
					t.Errorf("%s: the gateway serves no request its match takes (method %v, path %v)", id, ptrString(m.HTTP.Method), m.HTTP.Path)
				}
			}
		}
	}
	if routes == 0 {
		t.Error("the example policies have no routes")
	}
}

// grpcMethodExists reports whether method (Method, or package.Service/Method) is defined by a
// registered service.
func grpcMethodExists(method string) bool {
	service, name, qualified := strings.Cut(method, "/")
	if !qualified {
		name = service
	}
	found := false
	protoregistry.GlobalFiles.RangeFiles(func(f protoreflect.FileDescriptor) bool {
		for i := range f.Services().Len() {
			s := f.Services().Get(i)
			if (!qualified || string(s.FullName()) == service) && s.Methods().ByName(protoreflect.Name(name)) != nil {
				found = true
			}
		}
		return !found
	})
	return found
}

// gatewayMux is a ServeMux with the gateway's route patterns, read from its source.
func gatewayMux(t *testing.T) *http.ServeMux {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("..", "..", "..", "services", "gateway", "internal", "api", "routes.go"))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	patterns := regexp.MustCompile(`handle\("([A-Z]+ /[^"]*)"`).FindAllStringSubmatch(string(src), -1)
	if len(patterns) == 0 {
		t.Fatal("no handle(\"METHOD /path\", …) patterns in the gateway's routes.go")
	}
	for _, p := range patterns {
		mux.HandleFunc(p[1], func(http.ResponseWriter, *http.Request) {})
	}
	return mux
}

// servesSome reports whether the gateway serves a request m matches: its exact path, or its prefix
// followed by nothing or by one more segment.
func servesSome(mux *http.ServeMux, m *v1alpha1.HTTPMatch) bool {
	method := http.MethodGet
	if m.Method != nil {
		method = string(*m.Method)
	}
	paths := []string{"/"}
	if m.Path != nil {
		paths = []string{m.Path.Value}
		if m.Path.Type == v1alpha1.PathPrefix {
			paths = append(paths, strings.TrimSuffix(m.Path.Value, "/")+"/x")
		}
	}
	for _, path := range paths {
		req := httptest.NewRequest(method, path, nil)
		for _, h := range m.Headers {
			req.Header.Set(h.Name, h.Value)
		}
		if _, pattern := mux.Handler(req); pattern != "" {
			return true
		}
	}
	return false
}

func ptrString[S ~string](p *S) string {
	if p == nil {
		return "any"
	}
	return string(*p)
}
