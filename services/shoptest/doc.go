// Package shoptest runs the shop end to end: the four services built and started as real processes on
// 127.0.0.1, discovering each other through a real Consul and shipping logs to a real Loki.
package shoptest
