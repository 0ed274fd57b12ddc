package scenario

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"text/tabwriter"
	"time"

	"meshplane.dev/mesh/proxyless"
)

// ServedCertificate makes a TLS handshake with the server at addr as a mesh client would — presenting the
// certificate an istio-agent wrote to certDir, offering HTTP/2 — and returns the chain the server
// presented. A new connection each time, so it sees the certificate the server holds now. It checks
// nothing itself: VerifyIssued does.
func ServedCertificate(ctx context.Context, addr, certDir string) ([]*x509.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(filepath.Join(certDir, proxyless.CertChainFile), filepath.Join(certDir, proxyless.KeyFile))
	if err != nil {
		return nil, fmt.Errorf("client certificate in %s: %w", certDir, err)
	}
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: &tls.Config{
		Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"},
		// Mesh certificates name a SPIFFE id, not a host: VerifyIssued checks the chain and the id.
		InsecureSkipVerify: true, //nolint:gosec // verified by VerifyIssued against istiod's root
		MinVersion:         tls.VersionTLS12,
	}}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("TLS handshake with %s: %w", addr, err)
	}
	defer func() { _ = conn.Close() }()
	chain := conn.(*tls.Conn).ConnectionState().PeerCertificates
	if len(chain) == 0 {
		return nil, fmt.Errorf("TLS handshake with %s: the server presented no certificate", addr)
	}
	return chain, nil
}

// VerifyIssued checks that chain was issued under root (PEM: istiod's CA root, as in Secret
// istio-system/istio-ca-secret) and that its leaf's only identity is wantID (a SPIFFE id).
func VerifyIssued(chain []*x509.Certificate, root []byte, wantID string) error {
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(root) {
		return errors.New("no root certificate in the PEM given")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Errorf("not issued by istiod's CA: %w", err)
	}
	if ids := SPIFFEIDs(chain[0]); !slices.Equal(ids, []string{wantID}) {
		return fmt.Errorf("identities %v, want only %s", ids, wantID)
	}
	return nil
}

// SPIFFEIDs lists the URI SANs of a certificate.
func SPIFFEIDs(c *x509.Certificate) []string {
	var out []string
	for _, u := range c.URIs {
		out = append(out, u.String())
	}
	return out
}

// ReadCertificates parses a PEM file of certificates (an agent's cert-chain.pem).
func ReadCertificates(path string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		if blk, b = pem.Decode(b); blk == nil {
			break
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no certificate", path)
	}
	return out, nil
}

// CertificateCheck is one handshake's view of a server's certificate.
type CertificateCheck struct {
	// Label names the check, e.g. the instance or "after rotation".
	Label string
	// Chain is what the server presented; nil when the handshake failed (Err).
	Chain []*x509.Certificate
	// PID is the server's process id at the time, where known (0 otherwise): the same PID across
	// rotations shows a certificate picked up without a restart.
	PID int
	// Err is the handshake's or the verification's failure.
	Err error
}

// WriteCertificates prints checks as a table: serial, identity, validity, issuer verified.
func WriteCertificates(w io.Writer, title string, checks []CertificateCheck) error {
	if _, err := fmt.Fprintln(w, title); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	// istiod's CA dates NotBefore back 2 minutes for clock skew: a certificate's lifetime is its TTL + 2m.
	fmt.Fprintln(tw, "CHECK\tPID\tSERIAL\tIDENTITY (URI SAN)\tNOT AFTER (UTC)\tLIFETIME\tISSUED BY ISTIOD'S CA\tHELD")
	for _, c := range checks {
		pid := "-"
		if c.PID > 0 {
			pid = fmt.Sprint(c.PID)
		}
		if len(c.Chain) == 0 {
			fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\t-\tNO: %v\n", c.Label, pid, c.Err)
			continue
		}
		leaf := c.Chain[0]
		issued, held := "yes (chain verifies against istio-ca-secret's root)", "yes"
		if c.Err != nil {
			issued, held = "-", "NO: "+c.Err.Error()
		}
		fmt.Fprintf(tw, "%s\t%s\t%x\t%v\t%s\t%s\t%s\t%s\n", c.Label, pid, leaf.SerialNumber, SPIFFEIDs(leaf),
			leaf.NotAfter.UTC().Format("2006-01-02 15:04:05"), leaf.NotAfter.Sub(leaf.NotBefore), issued, held)
	}
	return tw.Flush()
}
