package localplatform

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// Phases of a run, in the state file.
const (
	PhaseStarting = "starting"
	PhaseReady    = "ready"
	PhaseFailed   = "failed"
	PhaseStopping = "stopping"
	PhaseStopped  = "stopped"
)

// markerEnv is set in the supervisor's environment and so inherited by every process it starts, directly
// or not (etcd and the apiserver come from envtest): `down` finds leftovers by it even after a crash.
const markerEnv = "MESHPLANE_UP_RUN"

// Component is one running part of the platform, as the state file records it.
type Component struct {
	Name string `json:"name"`
	// URL is where a person reaches it.
	URL string `json:"url,omitempty"`
	// Health is the URL that answers 200 while it is healthy.
	Health string `json:"health,omitempty"`
	PID    int    `json:"pid,omitempty"`
	Log    string `json:"log,omitempty"`
	// Restarts counts the times the supervisor started it again after its process exited.
	Restarts int `json:"restarts,omitempty"`
}

// State is the supervisor's record of a run (Dir/state.json).
type State struct {
	RunID         string    `json:"runID"`
	SupervisorPID int       `json:"supervisorPID"`
	Phase         string    `json:"phase"`
	Error         string    `json:"error,omitempty"`
	Started       time.Time `json:"started"`
	Ready         time.Time `json:"ready,omitzero"`
	Ports         Ports     `json:"ports"`
	Kubeconfig    string    `json:"kubeconfig"`
	// XDSAddr is istiod's plaintext xDS address when the mesh runs (--discovery xds).
	XDSAddr string `json:"xdsAddr,omitempty"`
	// SecureXDSAddr is istiod's TLS address (its CA and authenticated xDS) when the mesh runs.
	SecureXDSAddr string      `json:"secureXDSAddr,omitempty"`
	Components    []Component `json:"components"`
}

func writeState(path string, s *State) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// ReadState reads Dir/state.json; a missing file is (nil, nil).
func ReadState(dir string) (*State, error) {
	b, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("read %s: %w", filepath.Join(dir, "state.json"), err)
	}
	return &s, nil
}

// alive reports whether pid is a running (not zombie) process.
func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses: "pid (comm) S ...".
	if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) {
		return b[i+2] != 'Z'
	}
	return true
}

// RunProcesses returns the pids of live processes carrying the run's marker.
func RunProcesses(runID string) []int {
	want := []byte(markerEnv + "=" + runID + "\x00")
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil || !bytes.Contains(append(env, 0), want) {
			continue
		}
		if alive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// killRun sends sig to every process of the run.
func killRun(runID string, sig syscall.Signal) int {
	pids := RunProcesses(runID)
	for _, pid := range pids {
		_ = syscall.Kill(pid, sig)
	}
	return len(pids)
}
