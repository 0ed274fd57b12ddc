package dashboardtest

import (
	"maps"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"meshplane.dev/mesh/devserver"
	"meshplane.dev/mesh/devserver/devservertest"
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

// Start runs binary with env (and nothing else from the test's environment) until the test ends.
func Start(t testing.TB, binary string, env map[string]string) *devserver.Server {
	t.Helper()
	var list []string
	for _, k := range slices.Sorted(maps.Keys(env)) {
		list = append(list, k+"="+env[k])
	}
	return devservertest.Run(t, devserver.Program{Name: filepath.Base(binary), Bin: binary, Env: list, OnlyEnv: true})
}
