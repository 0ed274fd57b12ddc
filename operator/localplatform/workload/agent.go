package workload

import (
	"context"
	"errors"
	"fmt"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"meshplane.dev/mesh/devkit/devserver"
	"meshplane.dev/mesh/devkit/wait"
)

// RootCertConfigMap is the ConfigMap istiod publishes its root certificate in, in every namespace; a pod
// mounts it at /var/run/secrets/istio for its istio-agent.
const RootCertConfigMap = "istio-ca-root-cert"

// TokenTTL is the lifetime of the tokens StartAgent mints. The agent presents the token again for every
// certificate renewal and xDS reconnection, and nothing here refreshes it as a kubelet refreshes a
// projected token, so it lasts a day: longer than a `make up` session or a test.
const TokenTTL = 24 * time.Hour

// Token mints a token for service account sa in namespace through the apiserver's TokenRequest API,
// for audience and valid for ttl: the credential a kubelet projects into a pod.
func Token(ctx context.Context, c client.Client, namespace, sa, audience string, ttl time.Duration) ([]byte, error) {
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences: []string{audience}, ExpirationSeconds: ptr.To(int64(ttl.Seconds())),
	}}
	acct := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa, Namespace: namespace}}
	if err := c.SubResource("token").Create(ctx, acct, tr); err != nil {
		return nil, fmt.Errorf("token for serviceaccount %s/%s (audience %s): %w", namespace, sa, audience, err)
	}
	return []byte(tr.Status.Token), nil
}

// RootCert waits until istiod has published its root certificate into namespace (ConfigMap
// RootCertConfigMap, key root-cert.pem) and returns it (PEM).
func RootCert(ctx context.Context, c client.Reader, namespace string) ([]byte, error) {
	var root []byte
	err := wait.Until(ctx, 200*time.Millisecond, func(ctx context.Context) error {
		cm := &corev1.ConfigMap{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: RootCertConfigMap}, cm); err != nil {
			return err
		}
		if root = []byte(cm.Data["root-cert.pem"]); len(root) == 0 {
			return errors.New("no root-cert.pem in it")
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("istiod's root certificate (configmap %s/%s): %w", namespace, RootCertConfigMap, err)
	}
	return root, nil
}

// EnsureServiceAccount creates service account name in namespace unless it exists: the identity of a
// caller that has no Service of its own.
func EnsureServiceAccount(ctx context.Context, c client.Client, namespace, name string) error {
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace,
		Labels: map[string]string{ManagedByLabel: managedBy}}}
	if err := c.Create(ctx, sa); client.IgnoreAlreadyExists(err) != nil {
		return fmt.Errorf("create serviceaccount %s/%s: %w", namespace, name, err)
	}
	return nil
}

// AgentOptions shape StartAgent.
type AgentOptions struct {
	// Istiod is host:port of istiod's TLS port (devserver.Istiod.SecureXDSAddr).
	Istiod string
	// Audience is the token's audience; empty means devserver.AgentAudience, the only one istiod accepts
	// (tests set another to see the agent refused).
	Audience string
	// CertTTL is the certificates' lifetime (SECRET_TTL); 0 is the agent's default, 24h.
	CertTTL time.Duration
	// Env is added to the agent's environment (devserver.AgentConfig.Env).
	Env []string
}

// StartAgent joins instance i of s to the mesh's security as a kubelet and Istio's injector would for a
// pod: a token for s's service account from the TokenRequest API, istiod's root from the namespace, and a
// real istio-agent in o.Dir that gets the workload's certificate from istiod's CA. It returns once the
// certificate exists, or fails naming why (the TokenRequest's error, or the agent's own).
func StartAgent(ctx context.Context, c client.Client, s Service, i Instance, o devserver.Options, ao AgentOptions) (*devserver.Agent, error) {
	node := s.Node(i)
	audience := ao.Audience
	if audience == "" {
		audience = devserver.AgentAudience
	}
	token, err := Token(ctx, c, s.Namespace, node.ServiceAccount, audience, TokenTTL)
	if err != nil {
		return nil, fmt.Errorf("istio-agent for %s: %w", node.ProxyID(), err)
	}
	root, err := RootCert(ctx, c, s.Namespace)
	if err != nil {
		return nil, fmt.Errorf("istio-agent for %s: %w", node.ProxyID(), err)
	}
	return devserver.StartAgent(ctx, o, devserver.AgentConfig{Node: node, Istiod: ao.Istiod, Token: token, RootCert: root,
		CertTTL: ao.CertTTL, Env: ao.Env})
}
