// Package devkit holds what Meshplane's tests, benchmarks and local platform use and its services never
// do: devserver starts the real servers (Consul, Prometheus, Loki, istiod, the Kubernetes binaries) on
// loopback and runs child processes, devservertest does the same for one test, load drives closed-loop
// load, wait polls with a deadline, and metricstest reads metric values. The library the services import
// is the rest of mesh; scripts/check-deps.sh keeps the two apart.
package devkit
