package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"sigs.k8s.io/yaml"
	yamlv2 "sigs.k8s.io/yaml/goyaml.v2"
)

// RenderOptions configure the render section.
type RenderOptions struct {
	// Meshplane is the path of the meshplane binary (go build ./operator/cmd/meshplane).
	Meshplane string
	// N is the number of policies, with as many Services.
	N int
	// Dir receives the input file.
	Dir string
	// Log receives progress.
	Log io.Writer
}

// Render times `meshplane render` of N policies twice and checks that both outputs are byte-identical.
// The floor is the YAML alone: the same input documents decoded and the same output documents encoded
// with the YAML library render uses, in-process. Target: within 1.2× of that floor (issue 24: render has no
// target beyond keeping pace with the YAML it reads and writes).
func Render(ctx context.Context, o RenderOptions, emit func(Row) error) error {
	input, err := renderInput(o.N)
	if err != nil {
		return err
	}
	path := filepath.Join(o.Dir, fmt.Sprintf("render-%d.yaml", o.N))
	if err := os.WriteFile(path, input, 0o644); err != nil {
		return err
	}
	var outs [2][]byte
	var times [2]time.Duration
	for i := range outs {
		var stdout, stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, o.Meshplane, "render", "-f", path)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		start := time.Now()
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("meshplane render: %w: %s", err, stderr.Bytes())
		}
		times[i], outs[i] = time.Since(start), stdout.Bytes()
	}
	floor, docs, err := yamlFloor(input, outs[0])
	if err != nil {
		return err
	}
	fmt.Fprintf(o.Log, "render N=%d: %s and %s, %d documents, %d bytes out; YAML alone %s\n", o.N, seconds(times[0]), seconds(times[1]), docs, len(outs[0]), seconds(floor))
	slower := max(times[0], times[1])
	identical := "yes"
	if !bytes.Equal(outs[0], outs[1]) {
		identical = "no"
	}
	rows := []Row{
		{Section: "Render", Figure: fmt.Sprintf("meshplane render, %d policies → %d objects (slower of 2 runs)", o.N, docs),
			Value: seconds(slower), Floor: seconds(floor) + " (YAML decode+encode alone)", Ratio: ratio(slower, floor),
			Target: "≤ 1.2× floor", Met: met(slower <= floor*6/5)},
		{Section: "Render", Figure: "two runs byte-identical", Value: identical, Target: "yes", Met: met(identical == "yes")},
	}
	for _, r := range rows {
		if err := emit(r); err != nil {
			return err
		}
	}
	return nil
}

// renderInput returns n policies and their Services as one multi-document YAML file.
func renderInput(n int) ([]byte, error) {
	var buf bytes.Buffer
	for i := range n {
		for _, obj := range []any{Service("shop", i), Policy("shop", i)} {
			b, err := yaml.Marshal(obj)
			if err != nil {
				return nil, err
			}
			buf.WriteString("---\n")
			buf.Write(b)
		}
	}
	return buf.Bytes(), nil
}

// yamlFloor times what render cannot avoid: converting every input document from YAML to JSON once and
// encoding every output document with the YAML encoder render uses (the output is decoded beforehand,
// untimed). It returns the time and the number of output documents.
func yamlFloor(input, output []byte) (time.Duration, int, error) {
	var decoded []map[string]any
	for _, doc := range bytes.Split(output, []byte("---\n")) {
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		var m map[string]any
		if err := yaml.Unmarshal(doc, &m); err != nil {
			return 0, 0, err
		}
		decoded = append(decoded, m)
	}
	start := time.Now()
	for _, doc := range bytes.Split(input, []byte("---\n")) {
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		if _, err := yaml.YAMLToJSONStrict(doc); err != nil {
			return 0, 0, err
		}
	}
	var sink bytes.Buffer
	for _, m := range decoded {
		b, err := yamlv2.Marshal(m)
		if err != nil {
			return 0, 0, err
		}
		sink.WriteString("---\n")
		sink.Write(b)
	}
	return time.Since(start), len(decoded), nil
}
