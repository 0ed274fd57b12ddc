package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"meshplane.dev/dashboards/internal/dashboardtest"
)

// TestCommittedFilesAreCurrent fails when the committed dashboards or rules differ from what the Go
// definitions generate, naming the command that fixes it (CI also regenerates and diffs).
func TestCommittedFilesAreCurrent(t *testing.T) {
	files, err := Files()
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(dashboardtest.GeneratedDir(), name))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("generated/%s is stale or missing: run `make generate` (or go run ./dashboards/cmd/generate -out dashboards/generated)", name)
		}
	}
}

// TestRunRemovesStaleFiles: a dashboard that is no longer generated must not linger in the output.
func TestRunRemovesStaleFiles(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, GrafanaDir, "meshplane-removed.json")
	if err := os.MkdirAll(filepath.Dir(stale), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stale, []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"-out", dir}, os.Getenv, &stdout, &stderr); err != nil {
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale %s survived regeneration (stat: %v)", stale, err)
	}
	if _, err := os.Stat(filepath.Join(dir, RulesFile)); err != nil {
		t.Errorf("rules not written: %v", err)
	}
}

func TestRunRejectsUnknownFlag(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"-outdir", "x"}, os.Getenv, &stdout, &stderr); err == nil {
		t.Errorf("run accepted an unknown flag")
	}
}
