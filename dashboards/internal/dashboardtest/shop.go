package dashboardtest

import (
	"os/exec"
	"path/filepath"
	"testing"
)

// BuildServices builds the shop's service binaries (services/<name>) into a temporary directory and
// returns it.
func BuildServices(t testing.TB, names ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, name := range names {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, name), ".")
		cmd.Dir = filepath.Join(ModuleDir(), "..", "services", name)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", name, err, out)
		}
	}
	return dir
}
