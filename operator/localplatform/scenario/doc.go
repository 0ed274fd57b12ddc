// Package scenario runs traffic-policy scenarios on a live local mesh: apply a TrafficPolicy, wait
// until the callers' gRPC xDS client runs it, drive a bounded number of calls, and summarise what was
// observed (split ratio, success rate, latency, which instance served) next to what Istio's semantics
// predict. The integration test and `meshplane drill` both use it.
package scenario
