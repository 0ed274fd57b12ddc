package policytest

// SpecCase is a raw JSON spec and whether the API accepts it.
type SpecCase struct {
	Name  string
	Spec  string
	Valid bool
}

// SpecCases cover every validation rule of the TrafficPolicy API from both sides. The differential test
// sends each to a real API server and to Validate, and the fuzz test starts from them.
var SpecCases = []SpecCase{
	// targetRef
	{"minimal", `{"targetRef":{"name":"orders"}}`, true},
	{"kind Service", `{"targetRef":{"kind":"Service","name":"orders"}}`, true},
	{"kind Deployment", `{"targetRef":{"kind":"Deployment","name":"orders"}}`, false},
	{"no targetRef", `{}`, false},
	{"no target name", `{"targetRef":{"kind":"Service"}}`, false},
	{"empty target name", `{"targetRef":{"name":""}}`, false},
	{"uppercase target name", `{"targetRef":{"name":"Orders"}}`, false},
	{"target name starts with digit", `{"targetRef":{"name":"1orders"}}`, false},
	{"target name 63 chars", `{"targetRef":{"name":"a23456789012345678901234567890123456789012345678901234567890123"}}`, true},
	{"target name 64 chars", `{"targetRef":{"name":"a234567890123456789012345678901234567890123456789012345678901234"}}`, false},
	{"unknown field", `{"targetRef":{"name":"orders"},"timeouts":"3s"}`, false},
	{"wrong-case field", `{"targetRef":{"name":"orders"},"Timeout":"3s"}`, false},

	// durations
	{"timeout 3s", `{"targetRef":{"name":"orders"},"timeout":"3s"}`, true},
	{"timeout 1ms", `{"targetRef":{"name":"orders"},"timeout":"1ms"}`, true},
	{"timeout 1m30s", `{"targetRef":{"name":"orders"},"timeout":"1m30s"}`, true},
	{"timeout 0s", `{"targetRef":{"name":"orders"},"timeout":"0s"}`, false},
	{"timeout 0ms", `{"targetRef":{"name":"orders"},"timeout":"0ms"}`, false},
	{"timeout fractional", `{"targetRef":{"name":"orders"},"timeout":"1.5s"}`, false},
	{"timeout negative", `{"targetRef":{"name":"orders"},"timeout":"-1s"}`, false},
	{"timeout microseconds", `{"targetRef":{"name":"orders"},"timeout":"500us"}`, false},
	{"timeout no unit", `{"targetRef":{"name":"orders"},"timeout":"3"}`, false},
	{"timeout number", `{"targetRef":{"name":"orders"},"timeout":3}`, false},
	{"timeout 99999h", `{"targetRef":{"name":"orders"},"timeout":"99999h"}`, true},
	{"timeout five groups", `{"targetRef":{"name":"orders"},"timeout":"1h1m1s1ms1s"}`, false},

	// retries
	{"retries full", `{"targetRef":{"name":"orders"},"timeout":"3s","retries":{"attempts":2,"perTryTimeout":"1s","retryOn":["connect-failure","refused-stream","unavailable","503"]}}`, true},
	{"retries attempts 0", `{"targetRef":{"name":"orders"},"retries":{"attempts":0}}`, true},
	{"retries attempts 10", `{"targetRef":{"name":"orders"},"retries":{"attempts":10}}`, true},
	{"retries attempts 11", `{"targetRef":{"name":"orders"},"retries":{"attempts":11}}`, false},
	{"retries attempts negative", `{"targetRef":{"name":"orders"},"retries":{"attempts":-1}}`, false},
	{"retries attempts missing", `{"targetRef":{"name":"orders"},"retries":{"perTryTimeout":"1s"}}`, false},
	{"retries attempts string", `{"targetRef":{"name":"orders"},"retries":{"attempts":"2"}}`, false},
	{"retries attempts 0 with perTryTimeout", `{"targetRef":{"name":"orders"},"retries":{"attempts":0,"perTryTimeout":"1s"}}`, false},
	{"retries attempts 0 with retryOn", `{"targetRef":{"name":"orders"},"retries":{"attempts":0,"retryOn":["5xx"]}}`, false},
	{"perTryTimeout equals timeout", `{"targetRef":{"name":"orders"},"timeout":"1s","retries":{"attempts":1,"perTryTimeout":"1s"}}`, true},
	{"perTryTimeout 1000ms equals timeout 1s", `{"targetRef":{"name":"orders"},"timeout":"1s","retries":{"attempts":1,"perTryTimeout":"1000ms"}}`, true},
	{"perTryTimeout exceeds timeout", `{"targetRef":{"name":"orders"},"timeout":"1s","retries":{"attempts":1,"perTryTimeout":"1001ms"}}`, false},
	{"perTryTimeout without timeout", `{"targetRef":{"name":"orders"},"retries":{"attempts":1,"perTryTimeout":"1h"}}`, true},
	{"perTryTimeout 0s", `{"targetRef":{"name":"orders"},"retries":{"attempts":1,"perTryTimeout":"0s"}}`, false},
	{"retryOn every token", `{"targetRef":{"name":"orders"},"retries":{"attempts":1,"retryOn":["5xx","gateway-error","reset","reset-before-request","connect-failure","retriable-4xx","refused-stream","retriable-status-codes","retriable-headers","envoy-ratelimited","http3-post-connect-failure","cancelled","deadline-exceeded","internal","resource-exhausted","unavailable"]}}`, true},
	{"retryOn codes", `{"targetRef":{"name":"orders"},"retries":{"attempts":1,"retryOn":["400","429","451","500","503","511"]}}`, true},
	{"retryOn unknown code 599", `{"targetRef":{"name":"orders"},"retries":{"attempts":1,"retryOn":["599"]}}`, false},
	{"retryOn 2xx code", `{"targetRef":{"name":"orders"},"retries":{"attempts":1,"retryOn":["200"]}}`, false},
	{"retryOn unknown token", `{"targetRef":{"name":"orders"},"retries":{"attempts":1,"retryOn":["sometimes"]}}`, false},
	{"retryOn comma string", `{"targetRef":{"name":"orders"},"retries":{"attempts":1,"retryOn":["5xx,reset"]}}`, false},
	{"retryOn not a list", `{"targetRef":{"name":"orders"},"retries":{"attempts":1,"retryOn":"5xx"}}`, false},
	{"retryOn duplicate", `{"targetRef":{"name":"orders"},"retries":{"attempts":1,"retryOn":["5xx","5xx"]}}`, false},
	{"retryOn empty list", `{"targetRef":{"name":"orders"},"retries":{"attempts":1,"retryOn":[]}}`, false},
	{"retryOn 21 items", `{"targetRef":{"name":"orders"},"retries":{"attempts":1,"retryOn":["400","401","402","403","404","405","406","407","408","409","410","411","412","413","414","415","416","417","418","421","422"]}}`, false},
	{"retryOn long token", `{"targetRef":{"name":"orders"},"retries":{"attempts":1,"retryOn":["connect-failure-connect-failure-x"]}}`, false},
	{"retries empty", `{"targetRef":{"name":"orders"},"retries":{}}`, false},

	// circuitBreaker
	{"circuitBreaker full", `{"targetRef":{"name":"orders"},"circuitBreaker":{"maxConnections":100,"maxPendingRequests":10,"maxRequests":100,"maxRequestsPerConnection":0,"maxRetries":3,"consecutiveErrors":5,"interval":"10s","baseEjectionTime":"30s","maxEjectionPercent":50}}`, true},
	{"circuitBreaker zeros", `{"targetRef":{"name":"orders"},"circuitBreaker":{"maxConnections":0,"maxPendingRequests":0,"maxRequests":0,"maxRequestsPerConnection":0,"maxRetries":0,"consecutiveErrors":0}}`, true},
	{"circuitBreaker empty", `{"targetRef":{"name":"orders"},"circuitBreaker":{}}`, false},
	{"maxConnections negative", `{"targetRef":{"name":"orders"},"circuitBreaker":{"maxConnections":-1}}`, false},
	{"maxPendingRequests negative", `{"targetRef":{"name":"orders"},"circuitBreaker":{"maxPendingRequests":-1}}`, false},
	{"maxRequests negative", `{"targetRef":{"name":"orders"},"circuitBreaker":{"maxRequests":-1}}`, false},
	{"maxRequestsPerConnection negative", `{"targetRef":{"name":"orders"},"circuitBreaker":{"maxRequestsPerConnection":-1}}`, false},
	{"maxRetries negative", `{"targetRef":{"name":"orders"},"circuitBreaker":{"maxRetries":-1}}`, false},
	{"consecutiveErrors negative", `{"targetRef":{"name":"orders"},"circuitBreaker":{"consecutiveErrors":-1}}`, false},
	{"maxEjectionPercent 100", `{"targetRef":{"name":"orders"},"circuitBreaker":{"maxEjectionPercent":100}}`, true},
	{"maxEjectionPercent 1", `{"targetRef":{"name":"orders"},"circuitBreaker":{"maxEjectionPercent":1}}`, true},
	{"maxEjectionPercent 0", `{"targetRef":{"name":"orders"},"circuitBreaker":{"maxEjectionPercent":0}}`, false},
	{"maxEjectionPercent 101", `{"targetRef":{"name":"orders"},"circuitBreaker":{"maxEjectionPercent":101}}`, false},
	{"interval 0s", `{"targetRef":{"name":"orders"},"circuitBreaker":{"interval":"0s"}}`, false},
	{"baseEjectionTime bad", `{"targetRef":{"name":"orders"},"circuitBreaker":{"baseEjectionTime":"thirty seconds"}}`, false},
	{"pool size too large", `{"targetRef":{"name":"orders"},"circuitBreaker":{"maxConnections":2147483648}}`, false},

	// mtls
	{"mtls STRICT", `{"targetRef":{"name":"orders"},"mtls":{"mode":"STRICT"}}`, true},
	{"mtls PERMISSIVE", `{"targetRef":{"name":"orders"},"mtls":{"mode":"PERMISSIVE"}}`, true},
	{"mtls DISABLE", `{"targetRef":{"name":"orders"},"mtls":{"mode":"DISABLE"}}`, true},
	{"mtls lowercase", `{"targetRef":{"name":"orders"},"mtls":{"mode":"strict"}}`, false},
	{"mtls UNSET", `{"targetRef":{"name":"orders"},"mtls":{"mode":"UNSET"}}`, false},
	{"mtls no mode", `{"targetRef":{"name":"orders"},"mtls":{}}`, false},

	// split
	{"split 90/10", `{"targetRef":{"name":"orders"},"split":[{"subset":"v1","labels":{"version":"v1"},"weight":90},{"subset":"v2","labels":{"version":"v2"},"weight":10}]}`, true},
	{"split single 100", `{"targetRef":{"name":"orders"},"split":[{"subset":"stable","labels":{"track":"stable"},"weight":100}]}`, true},
	{"split staged 0", `{"targetRef":{"name":"orders"},"split":[{"subset":"v1","labels":{"version":"v1"},"weight":100},{"subset":"v2","labels":{"version":"v2"},"weight":0}]}`, true},
	{"split sum 90", `{"targetRef":{"name":"orders"},"split":[{"subset":"v1","labels":{"version":"v1"},"weight":80},{"subset":"v2","labels":{"version":"v2"},"weight":10}]}`, false},
	{"split sum 110", `{"targetRef":{"name":"orders"},"split":[{"subset":"v1","labels":{"version":"v1"},"weight":100},{"subset":"v2","labels":{"version":"v2"},"weight":10}]}`, false},
	{"split weight 101", `{"targetRef":{"name":"orders"},"split":[{"subset":"v1","labels":{"version":"v1"},"weight":101}]}`, false},
	{"split weight negative", `{"targetRef":{"name":"orders"},"split":[{"subset":"v1","labels":{"version":"v1"},"weight":110},{"subset":"v2","labels":{"version":"v2"},"weight":-10}]}`, false},
	{"split weight missing", `{"targetRef":{"name":"orders"},"split":[{"subset":"v1","labels":{"version":"v1"},"weight":100},{"subset":"v2","labels":{"version":"v2"}}]}`, false},
	{"split duplicate subset", `{"targetRef":{"name":"orders"},"split":[{"subset":"v1","labels":{"version":"v1"},"weight":50},{"subset":"v1","labels":{"version":"v2"},"weight":50}]}`, false},
	{"split subset not a DNS label", `{"targetRef":{"name":"orders"},"split":[{"subset":"V1","labels":{"version":"v1"},"weight":100}]}`, false},
	{"split subset with dot", `{"targetRef":{"name":"orders"},"split":[{"subset":"v1.0","labels":{"version":"v1"},"weight":100}]}`, false},
	{"split subset missing", `{"targetRef":{"name":"orders"},"split":[{"labels":{"version":"v1"},"weight":100}]}`, false},
	{"split labels missing", `{"targetRef":{"name":"orders"},"split":[{"subset":"v1","weight":100}]}`, false},
	{"split labels empty", `{"targetRef":{"name":"orders"},"split":[{"subset":"v1","labels":{},"weight":100}]}`, false},
	{"split label prefixed key", `{"targetRef":{"name":"orders"},"split":[{"subset":"v1","labels":{"app.kubernetes.io/version":"1.2.3"},"weight":100}]}`, true},
	{"split label empty value", `{"targetRef":{"name":"orders"},"split":[{"subset":"v1","labels":{"canary":""},"weight":100}]}`, true},
	{"split label bad key", `{"targetRef":{"name":"orders"},"split":[{"subset":"v1","labels":{"-version":"v1"},"weight":100}]}`, false},
	{"split label key two slashes", `{"targetRef":{"name":"orders"},"split":[{"subset":"v1","labels":{"a/b/c":"v1"},"weight":100}]}`, false},
	{"split label key empty prefix", `{"targetRef":{"name":"orders"},"split":[{"subset":"v1","labels":{"/version":"v1"},"weight":100}]}`, false},
	{"split label key uppercase prefix", `{"targetRef":{"name":"orders"},"split":[{"subset":"v1","labels":{"Example.com/version":"v1"},"weight":100}]}`, false},
	{"split label key name 64 chars", `{"targetRef":{"name":"orders"},"split":[{"subset":"v1","labels":{"a234567890123456789012345678901234567890123456789012345678901234":"v1"},"weight":100}]}`, false},
	{"split label bad value", `{"targetRef":{"name":"orders"},"split":[{"subset":"v1","labels":{"version":"v1 beta"},"weight":100}]}`, false},
	{"split label value 64 chars", `{"targetRef":{"name":"orders"},"split":[{"subset":"v1","labels":{"version":"a234567890123456789012345678901234567890123456789012345678901234"},"weight":100}]}`, false},
	{"split empty", `{"targetRef":{"name":"orders"},"split":[]}`, false},
	{"split 11 subsets", `{"targetRef":{"name":"orders"},"split":[{"subset":"a","labels":{"v":"a"},"weight":10},{"subset":"b","labels":{"v":"b"},"weight":10},{"subset":"c","labels":{"v":"c"},"weight":10},{"subset":"d","labels":{"v":"d"},"weight":10},{"subset":"e","labels":{"v":"e"},"weight":10},{"subset":"f","labels":{"v":"f"},"weight":10},{"subset":"g","labels":{"v":"g"},"weight":10},{"subset":"h","labels":{"v":"h"},"weight":10},{"subset":"i","labels":{"v":"i"},"weight":10},{"subset":"j","labels":{"v":"j"},"weight":10},{"subset":"k","labels":{"v":"k"},"weight":0}]}`, false},

	// allow
	{"allow same namespace", `{"targetRef":{"name":"orders"},"allow":[{"serviceAccount":"gateway"}]}`, true},
	{"allow cross namespace", `{"targetRef":{"name":"orders"},"allow":[{"serviceAccount":"gateway"},{"serviceAccount":"loadgen","namespace":"tools"}]}`, true},
	{"allow dotted service account", `{"targetRef":{"name":"orders"},"allow":[{"serviceAccount":"ci.runner"}]}`, true},
	{"allow no service account", `{"targetRef":{"name":"orders"},"allow":[{"namespace":"tools"}]}`, false},
	{"allow empty service account", `{"targetRef":{"name":"orders"},"allow":[{"serviceAccount":""}]}`, false},
	{"allow bad service account", `{"targetRef":{"name":"orders"},"allow":[{"serviceAccount":"Gateway"}]}`, false},
	{"allow bad namespace", `{"targetRef":{"name":"orders"},"allow":[{"serviceAccount":"gateway","namespace":"tools.prod"}]}`, false},
	{"allow empty", `{"targetRef":{"name":"orders"},"allow":[]}`, false},

	// everything at once, and several problems at once
	{"everything", `{"targetRef":{"kind":"Service","name":"orders"},"timeout":"3s","retries":{"attempts":2,"perTryTimeout":"1s","retryOn":["connect-failure","refused-stream","unavailable","503"]},"circuitBreaker":{"maxConnections":100,"maxPendingRequests":10,"maxRequests":100,"maxRequestsPerConnection":0,"maxRetries":3,"consecutiveErrors":5,"interval":"10s","baseEjectionTime":"30s","maxEjectionPercent":50},"mtls":{"mode":"STRICT"},"split":[{"subset":"v1","labels":{"version":"v1"},"weight":90},{"subset":"v2","labels":{"version":"v2"},"weight":10}],"allow":[{"serviceAccount":"gateway"},{"serviceAccount":"loadgen","namespace":"tools"}]}`, true},
	{"many problems", `{"targetRef":{"name":"Orders"},"timeout":"1.5s","retries":{"attempts":0,"retryOn":["599"]},"mtls":{"mode":"strict"},"split":[{"subset":"a","labels":{"v":"1"},"weight":50}]}`, false},
}

// MessageCase is an invalid spec and the messages both the API server and Validate must give it.
type MessageCase struct {
	Name string
	Spec string
	// Fields holds the field path of every message, one entry per message: each problem is reported once,
	// at the field to change.
	Fields []string
	// Says is text every message must contain: the values a team needs to see to fix the spec.
	Says []string
}

// MessageCases are the specs whose messages matter beyond the verdict. A value the pattern rejects gets
// the pattern's message alone, not also a CEL rule's failed conversion of it; a rule that depends on a
// value another rule rejects stays silent; a message names the values that break the rule.
var MessageCases = []MessageCase{
	// malformed durations: one message each, with the value
	{"timeout banana", `{"targetRef":{"name":"orders"},"timeout":"banana"}`, []string{"spec.timeout"}, []string{`"banana"`}},
	{"timeout no unit", `{"targetRef":{"name":"orders"},"timeout":"3"}`, []string{"spec.timeout"}, []string{`"3"`}},
	{"timeout negative", `{"targetRef":{"name":"orders"},"timeout":"-1s"}`, []string{"spec.timeout"}, []string{`"-1s"`}},
	{"timeout microseconds", `{"targetRef":{"name":"orders"},"timeout":"500us"}`, []string{"spec.timeout"}, []string{`"500us"`}},
	{"timeout banana with perTryTimeout", `{"targetRef":{"name":"orders"},"timeout":"banana","retries":{"attempts":1,"perTryTimeout":"2s"}}`, []string{"spec.timeout"}, []string{`"banana"`}},
	{"perTryTimeout banana", `{"targetRef":{"name":"orders"},"timeout":"1s","retries":{"attempts":1,"perTryTimeout":"banana"}}`, []string{"spec.retries.perTryTimeout"}, []string{`"banana"`}},
	{"interval banana", `{"targetRef":{"name":"orders"},"circuitBreaker":{"interval":"banana"}}`, []string{"spec.circuitBreaker.interval"}, []string{`"banana"`}},
	{"baseEjectionTime words", `{"targetRef":{"name":"orders"},"circuitBreaker":{"baseEjectionTime":"thirty seconds"}}`, []string{"spec.circuitBreaker.baseEjectionTime"}, []string{`"thirty seconds"`}},
	{"timeout 0s with perTryTimeout", `{"targetRef":{"name":"orders"},"timeout":"0s","retries":{"attempts":1,"perTryTimeout":"1s"}}`, []string{"spec.timeout"}, []string{"must be at least 1ms"}},

	// messages that carry the values breaking the rule
	{"perTryTimeout exceeds timeout", `{"targetRef":{"name":"orders"},"timeout":"1s","retries":{"attempts":1,"perTryTimeout":"1001ms"}}`, []string{"spec.retries.perTryTimeout"}, []string{"1001ms", "must not exceed spec.timeout (1s)"}},
	{"split sum 90", `{"targetRef":{"name":"orders"},"split":[{"subset":"v1","labels":{"version":"v1"},"weight":80},{"subset":"v2","labels":{"version":"v2"},"weight":10}]}`, []string{"spec.split"}, []string{"must sum to 100", "90"}},
	{"split sum 110", `{"targetRef":{"name":"orders"},"split":[{"subset":"v1","labels":{"version":"v1"},"weight":100},{"subset":"v2","labels":{"version":"v2"},"weight":10}]}`, []string{"spec.split"}, []string{"must sum to 100", "110"}},
	{"split label bad key", `{"targetRef":{"name":"orders"},"split":[{"subset":"v1","labels":{"-version":"v1"},"weight":100}]}`, []string{"spec.split[0].labels"}, []string{"-version"}},

	// a rule that depends on a value another rule rejects stays silent
	{"split empty", `{"targetRef":{"name":"orders"},"split":[]}`, []string{"spec.split"}, nil},
	{"split weight 101", `{"targetRef":{"name":"orders"},"split":[{"subset":"v1","labels":{"version":"v1"},"weight":101}]}`, []string{"spec.split[0].weight"}, []string{"101"}},

	// retries disabled: each field that must go is named
	{"retries attempts 0 with perTryTimeout and retryOn", `{"targetRef":{"name":"orders"},"retries":{"attempts":0,"perTryTimeout":"1s","retryOn":["5xx"]}}`, []string{"spec.retries.perTryTimeout", "spec.retries.retryOn"}, []string{"must be unset when spec.retries.attempts is 0"}},
}
