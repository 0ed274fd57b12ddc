package desiredstate

import (
	"flag"
	"fmt"
	"strings"

	"meshplane.dev/operator/api/v1alpha1"
)

// AddFlags registers the platform defaults on fs, initialised from d, so the operator and the CLI offer
// the same flags with the same meaning. Call Validate after parsing.
func (d *Defaults) AddFlags(fs *flag.FlagSet) {
	if d.Retries.Attempts == nil {
		d.Retries.Attempts = new(int32)
	}
	fs.Func("default-retry-attempts", fmt.Sprintf("retries after the first try for policies that leave spec.retries unset, 0 to 10 (default %d)", *d.Retries.Attempts), func(s string) error {
		var n int32
		if _, err := fmt.Sscan(s, &n); err != nil {
			return fmt.Errorf("not an integer: %q", s)
		}
		*d.Retries.Attempts = n
		return nil
	})
	fs.Func("default-retry-on", fmt.Sprintf("comma-separated retry conditions for policies that leave spec.retries unset (default %q)", joinConditions(d.Retries.RetryOn)), func(s string) error {
		d.Retries.RetryOn = nil
		for _, c := range strings.Split(s, ",") {
			if c = strings.TrimSpace(c); c != "" {
				d.Retries.RetryOn = append(d.Retries.RetryOn, v1alpha1.RetryCondition(c))
			}
		}
		return nil
	})
	fs.Func("default-per-try-timeout", "per-attempt timeout for policies that leave spec.retries unset, e.g. 2s (default: none)", func(s string) error {
		if s == "" {
			d.Retries.PerTryTimeout = nil
			return nil
		}
		v := v1alpha1.Duration(s)
		d.Retries.PerTryTimeout = &v
		return nil
	})
	fs.StringVar(&d.ClusterDomain, "cluster-domain", d.ClusterDomain, "cluster DNS domain that completes Service hosts")
	fs.StringVar(&d.TrustDomain, "trust-domain", d.TrustDomain, "mesh trust domain that prefixes caller principals")
}
