package localplatform

import (
	"net"
	"strconv"
	"strings"
	"testing"
)

func TestPortsSet(t *testing.T) {
	p := DefaultPorts()
	if err := p.Set("prometheus=19090,gateway=18080"); err != nil {
		t.Fatal(err)
	}
	if p["prometheus"] != 19090 || p["gateway"] != 18080 || p["consul"] != 8500 {
		t.Errorf("ports after Set = %v", p)
	}
	for in, want := range map[string]string{
		"grafana=3000":     `unknown component "grafana"`,
		"prometheus":       "want name=port",
		"prometheus=99999": `"99999" is not a port number`,
	} {
		if err := p.Set(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Set(%q) = %v, want %q", in, err, want)
		}
	}
}

func TestCheckFreeNamesComponentAndPort(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	taken := l.Addr().(*net.TCPAddr).Port
	err = Ports{"prometheus": taken}.CheckFree()
	want := "prometheus: port " + strconv.Itoa(taken) + " is in use"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("CheckFree = %v, want %q", err, want)
	}
	if err := (Ports{"a": taken + 1, "b": taken + 1}).CheckFree(); err == nil || !strings.Contains(err.Error(), "both want port") {
		t.Errorf("duplicate ports: %v", err)
	}
}
