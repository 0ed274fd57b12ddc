package manifests

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// dockerfile is what the tests read from a Dockerfile.
type dockerfile struct {
	copies     []string // COPY sources from the build context
	finalFrom  string   // base image of the last stage
	finalUser  string   // USER of the last stage
	exposed    []int32
	entrypoint bool
	cgoOff     bool
}

var (
	fromLine    = regexp.MustCompile(`^FROM\s+(\S+)`)
	replaceLine = regexp.MustCompile(`(?m)^\s*(?:replace\s+)?\S+(?:\s+\S+)?\s+=>\s+(\.\.?/\S*)\s*$`)
)

func parseDockerfile(t *testing.T, path string) dockerfile {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d dockerfile
	// Join continuation lines; instructions are case-insensitive but written upper case here.
	text := strings.ReplaceAll(string(b), "\\\n", " ")
	for _, line := range strings.Split(text, "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		switch fields[0] {
		case "FROM":
			d.finalFrom, d.finalUser, d.exposed, d.entrypoint = fromLine.FindStringSubmatch(line)[1], "", nil, false
		case "USER":
			d.finalUser = fields[1]
		case "EXPOSE":
			for _, p := range fields[1:] {
				n, err := strconv.Atoi(p)
				if err != nil {
					t.Fatalf("%s: EXPOSE %s", path, p)
				}
				d.exposed = append(d.exposed, int32(n))
			}
		case "ENTRYPOINT":
			d.entrypoint = true
		case "ENV":
			d.cgoOff = d.cgoOff || slices.Contains(fields, "CGO_ENABLED=0")
		case "COPY":
			if strings.HasPrefix(fields[1], "--from") {
				continue
			}
			d.copies = append(d.copies, fields[1:len(fields)-1]...)
		}
	}
	return d
}

// localModules returns dir and every directory its go.mod replaces a module with, transitively.
func localModules(t *testing.T, root, dir string) []string {
	t.Helper()
	seen := map[string]bool{}
	var walk func(dir string)
	walk = func(dir string) {
		if seen[dir] {
			return
		}
		seen[dir] = true
		b, err := os.ReadFile(filepath.Join(root, dir, "go.mod"))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range replaceLine.FindAllStringSubmatch(string(b), -1) {
			walk(filepath.Clean(filepath.Join(dir, m[1])))
		}
	}
	walk(dir)
	var out []string
	for d := range seen {
		out = append(out, d)
	}
	slices.Sort(out)
	return out
}

// TestDockerfiles: every meshplane image the overlays run has a Dockerfile that builds a static binary
// (CGO off) from a build context holding its module and every module its go.mod replaces (so the build
// cannot miss a sibling), on an empty base as a non-root numeric user, exposing the ports the manifests
// use; and `make images` builds exactly those images at the tag the manifests pin. No Docker engine
// here: what can be checked without building is checked.
func TestDockerfiles(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	ports := map[string][]int32{} // image name -> container ports in the manifests
	tags := map[string]bool{}
	for _, o := range Overlays {
		workloads, err := Workloads(rendered(t, o).objs)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range workloads {
			for _, c := range w.Template.Spec.Containers {
				i := strings.Index(c.Image, "meshplane/")
				if i < 0 {
					continue
				}
				name, tag, _ := strings.Cut(c.Image[i+len("meshplane/"):], ":")
				tags[tag] = true
				for _, p := range c.Ports {
					if !slices.Contains(ports[name], p.ContainerPort) {
						ports[name] = append(ports[name], p.ContainerPort)
					}
				}
				if _, ok := ports[name]; !ok {
					ports[name] = nil
				}
			}
		}
	}
	var names []string
	for name := range ports {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			module := filepath.Join("services", name)
			if name == "operator" {
				module = "operator"
			}
			d := parseDockerfile(t, filepath.Join(root, module, "Dockerfile"))
			for _, dir := range localModules(t, root, module) {
				if !slices.ContainsFunc(d.copies, func(src string) bool {
					src = filepath.Clean(src)
					return dir == src || strings.HasPrefix(dir, src+"/")
				}) {
					t.Errorf("the build context copies %v, but module %s needs %s (go.mod replace)", d.copies, module, dir)
				}
			}
			if !d.cgoOff {
				t.Error("CGO_ENABLED=0 not set: the binary would not be static")
			}
			if d.finalFrom != "scratch" && !strings.HasPrefix(d.finalFrom, "gcr.io/distroless/static") {
				t.Errorf("final stage FROM %s; want scratch or distroless static", d.finalFrom)
			}
			user, _, _ := strings.Cut(d.finalUser, ":")
			if uid, err := strconv.Atoi(user); err != nil || uid == 0 {
				t.Errorf("final stage USER %q; want a numeric non-root user (runAsNonRoot can check only numbers)", d.finalUser)
			}
			if !d.entrypoint {
				t.Error("final stage has no ENTRYPOINT")
			}
			slices.Sort(d.exposed)
			slices.Sort(ports[name])
			if diff := cmp.Diff(ports[name], d.exposed); diff != "" {
				t.Errorf("EXPOSE differs from the manifests' container ports (-manifests +Dockerfile):\n%s", diff)
			}
		})
	}

	makefile, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	value := func(v string) string {
		m := regexp.MustCompile(`(?m)^` + v + `\s*\?=\s*(.*)$`).FindSubmatch(makefile)
		if m == nil {
			t.Fatalf("Makefile sets no %s", v)
		}
		return strings.TrimSpace(string(m[1]))
	}
	built := strings.Fields(value("IMAGES"))
	slices.Sort(built)
	if diff := cmp.Diff(names, built); diff != "" {
		t.Errorf("make images builds (+) other images than the overlays run (-):\n%s", diff)
	}
	if tag := value("IMAGE_TAG"); len(tags) != 1 || !tags[tag] {
		t.Errorf("make images tags %s; the manifests pin %v", tag, tags)
	}
}
