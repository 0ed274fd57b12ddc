// Package istioctl runs the real istioctl built by `make tools`: Istio's own offline analyzers over rendered
// objects, as a test oracle for what Meshplane generates.
package istioctl

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"

	"meshplane.dev/mesh/devkit/devserver"
)

// Message is one finding of `istioctl analyze`.
type Message struct {
	Code    string `json:"code"`
	Level   string `json:"level"`
	Message string `json:"message"`
	Origin  string `json:"origin"`
}

func (m Message) String() string {
	return fmt.Sprintf("%s [%s] (%s) %s", m.Level, m.Code, m.Origin, m.Message)
}

// Analyze runs Istio's own offline analyzers (`istioctl analyze --use-kube=false -A`) over the files
// and returns every message, Info included.
func Analyze(files ...string) ([]Message, error) {
	bin, err := devserver.Binary("istioctl", "istio")
	if err != nil {
		return nil, err
	}
	args := append([]string{"analyze", "--use-kube=false", "-A", "-o", "json", "--failure-threshold", "Error"}, files...)
	cmd := exec.Command(bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	var msgs []Message
	if err := json.Unmarshal(stdout.Bytes(), &msgs); err != nil {
		return nil, fmt.Errorf("istioctl analyze %s: %w: %s%s", strings.Join(files, " "), errors.Join(runErr, err), stdout.String(), stderr.String())
	}
	// A non-zero exit with parsed messages means findings at Error level; callers judge those.
	return msgs, nil
}
