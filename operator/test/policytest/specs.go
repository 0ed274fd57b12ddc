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

	// routes
	{"routes gRPC method name", `{"targetRef":{"name":"payments"},"routes":[{"name":"charge","match":{"grpc":{"method":"Charge"}},"retries":{"attempts":0}}]}`, true},
	{"routes gRPC service/method", `{"targetRef":{"name":"payments"},"routes":[{"name":"charge","match":{"grpc":{"method":"meshplane.payments.v1.PaymentService/Charge"}},"timeout":"2s"}]}`, true},
	{"routes gRPC service", `{"targetRef":{"name":"payments"},"routes":[{"name":"catalog","match":{"grpc":{"service":"meshplane.catalog.v1.CatalogService"}},"retries":{"attempts":2,"retryOn":["unavailable"]}}]}`, true},
	{"routes gRPC method and service/method differ", `{"targetRef":{"name":"payments"},"routes":[{"name":"charge","match":{"grpc":{"method":"Charge"}},"retries":{"attempts":0}},{"name":"charge-exact","match":{"grpc":{"method":"meshplane.payments.v1.PaymentService/Charge"}},"timeout":"1s"}]}`, true},
	{"routes HTTP exact path and method", `{"targetRef":{"name":"payments"},"routes":[{"name":"place-order","match":{"http":{"path":{"type":"Exact","value":"/v1/orders"},"method":"POST"}},"timeout":"5s"}]}`, true},
	{"routes HTTP prefix and headers", `{"targetRef":{"name":"payments"},"routes":[{"name":"gold","match":{"http":{"path":{"type":"Prefix","value":"/v1/"},"headers":[{"name":"x-tenant","value":"gold"},{"name":"x-region","value":"eu"}]}},"fault":{"delay":{"fixedDelay":"100ms","percentage":50}}}]}`, true},
	{"routes HTTP method only", `{"targetRef":{"name":"payments"},"routes":[{"name":"reads","match":{"http":{"method":"GET"}},"retries":{"attempts":3,"retryOn":["5xx"]}}]}`, true},
	{"routes HTTP prefix / with method", `{"targetRef":{"name":"payments"},"routes":[{"name":"posts","match":{"http":{"path":{"type":"Prefix","value":"/"},"method":"POST"}},"idempotent":true}]}`, true},
	{"routes HTTP same path, other method", `{"targetRef":{"name":"payments"},"routes":[{"name":"get-orders","match":{"http":{"path":{"type":"Exact","value":"/v1/orders"},"method":"GET"}},"timeout":"1s"},{"name":"post-orders","match":{"http":{"path":{"type":"Exact","value":"/v1/orders"},"method":"POST"}},"timeout":"5s"}]}`, true},
	{"routes HTTP same path, exact and prefix", `{"targetRef":{"name":"payments"},"routes":[{"name":"a","match":{"http":{"path":{"type":"Exact","value":"/v1"}}},"timeout":"1s"},{"name":"b","match":{"http":{"path":{"type":"Prefix","value":"/v1"}}},"timeout":"2s"}]}`, true},
	{"routes HTTP same path, other headers", `{"targetRef":{"name":"payments"},"routes":[{"name":"a","match":{"http":{"path":{"type":"Prefix","value":"/v1"},"headers":[{"name":"x-a","value":"1"}]}},"timeout":"1s"},{"name":"b","match":{"http":{"path":{"type":"Prefix","value":"/v1"},"headers":[{"name":"x-a","value":"2"}]}},"timeout":"2s"}]}`, true},
	{"routes idempotent false", `{"targetRef":{"name":"payments"},"routes":[{"name":"charge","match":{"grpc":{"method":"Charge"}},"idempotent":false}]}`, true},
	{"routes fault abort gRPC code", `{"targetRef":{"name":"payments"},"routes":[{"name":"charge","match":{"grpc":{"method":"Charge"}},"fault":{"abort":{"percentage":10,"code":"UNAVAILABLE"}}}]}`, true},
	{"routes fault abort HTTP status", `{"targetRef":{"name":"payments"},"routes":[{"name":"orders","match":{"http":{"path":{"type":"Prefix","value":"/v1/orders"}}},"fault":{"abort":{"percentage":100,"code":"503"}}}]}`, true},
	{"routes fault delay and abort at 0%", `{"targetRef":{"name":"payments"},"routes":[{"name":"charge","match":{"grpc":{"method":"Charge"}},"fault":{"delay":{"fixedDelay":"1s","percentage":0},"abort":{"percentage":0,"code":"INTERNAL"}}}]}`, true},
	{"routes timeout longer than spec.timeout", `{"targetRef":{"name":"payments"},"timeout":"1s","routes":[{"name":"list","match":{"grpc":{"method":"ListProducts"}},"timeout":"3s"}]}`, true},
	{"routes perTryTimeout within own timeout", `{"targetRef":{"name":"payments"},"timeout":"1s","routes":[{"name":"get","match":{"grpc":{"method":"GetProduct"}},"timeout":"300ms","retries":{"attempts":2,"perTryTimeout":"100ms","retryOn":["unavailable"]}}]}`, true},
	{"routes perTryTimeout within inherited timeout", `{"targetRef":{"name":"payments"},"timeout":"1s","routes":[{"name":"get","match":{"grpc":{"method":"GetProduct"}},"retries":{"attempts":2,"perTryTimeout":"1s"}}]}`, true},
	{"routes timeout fits inherited perTryTimeout", `{"targetRef":{"name":"payments"},"timeout":"3s","retries":{"attempts":1,"perTryTimeout":"500ms"},"routes":[{"name":"get","match":{"grpc":{"method":"GetProduct"}},"timeout":"500ms"}]}`, true},
	{"routes 16", `{"targetRef":{"name":"payments"},"routes":[{"name":"m0","match":{"grpc":{"method":"M0"}},"timeout":"1s"},{"name":"m1","match":{"grpc":{"method":"M1"}},"timeout":"1s"},{"name":"m2","match":{"grpc":{"method":"M2"}},"timeout":"1s"},{"name":"m3","match":{"grpc":{"method":"M3"}},"timeout":"1s"},{"name":"m4","match":{"grpc":{"method":"M4"}},"timeout":"1s"},{"name":"m5","match":{"grpc":{"method":"M5"}},"timeout":"1s"},{"name":"m6","match":{"grpc":{"method":"M6"}},"timeout":"1s"},{"name":"m7","match":{"grpc":{"method":"M7"}},"timeout":"1s"},{"name":"m8","match":{"grpc":{"method":"M8"}},"timeout":"1s"},{"name":"m9","match":{"grpc":{"method":"M9"}},"timeout":"1s"},{"name":"m10","match":{"grpc":{"method":"M10"}},"timeout":"1s"},{"name":"m11","match":{"grpc":{"method":"M11"}},"timeout":"1s"},{"name":"m12","match":{"grpc":{"method":"M12"}},"timeout":"1s"},{"name":"m13","match":{"grpc":{"method":"M13"}},"timeout":"1s"},{"name":"m14","match":{"grpc":{"method":"M14"}},"timeout":"1s"},{"name":"m15","match":{"grpc":{"method":"M15"}},"timeout":"1s"}]}`, true},
	{"top-level fault", `{"targetRef":{"name":"payments"},"fault":{"delay":{"fixedDelay":"100ms","percentage":50},"abort":{"percentage":5,"code":"503"}}}`, true},
	{"routes empty", `{"targetRef":{"name":"payments"},"routes":[]}`, false},
	{"routes 17", `{"targetRef":{"name":"payments"},"routes":[{"name":"m0","match":{"grpc":{"method":"M0"}},"timeout":"1s"},{"name":"m1","match":{"grpc":{"method":"M1"}},"timeout":"1s"},{"name":"m2","match":{"grpc":{"method":"M2"}},"timeout":"1s"},{"name":"m3","match":{"grpc":{"method":"M3"}},"timeout":"1s"},{"name":"m4","match":{"grpc":{"method":"M4"}},"timeout":"1s"},{"name":"m5","match":{"grpc":{"method":"M5"}},"timeout":"1s"},{"name":"m6","match":{"grpc":{"method":"M6"}},"timeout":"1s"},{"name":"m7","match":{"grpc":{"method":"M7"}},"timeout":"1s"},{"name":"m8","match":{"grpc":{"method":"M8"}},"timeout":"1s"},{"name":"m9","match":{"grpc":{"method":"M9"}},"timeout":"1s"},{"name":"m10","match":{"grpc":{"method":"M10"}},"timeout":"1s"},{"name":"m11","match":{"grpc":{"method":"M11"}},"timeout":"1s"},{"name":"m12","match":{"grpc":{"method":"M12"}},"timeout":"1s"},{"name":"m13","match":{"grpc":{"method":"M13"}},"timeout":"1s"},{"name":"m14","match":{"grpc":{"method":"M14"}},"timeout":"1s"},{"name":"m15","match":{"grpc":{"method":"M15"}},"timeout":"1s"},{"name":"m16","match":{"grpc":{"method":"M16"}},"timeout":"1s"}]}`, false},
	{"route no name", `{"targetRef":{"name":"payments"},"routes":[{"match":{"grpc":{"method":"Charge"}},"timeout":"1s"}]}`, false},
	{"route named default", `{"targetRef":{"name":"payments"},"routes":[{"name":"default","match":{"grpc":{"method":"Charge"}},"timeout":"1s"}]}`, false},
	{"route name uppercase", `{"targetRef":{"name":"payments"},"routes":[{"name":"Charge","match":{"grpc":{"method":"Charge"}},"timeout":"1s"}]}`, false},
	{"route name duplicate", `{"targetRef":{"name":"payments"},"routes":[{"name":"charge","match":{"grpc":{"method":"Charge"}},"retries":{"attempts":0}},{"name":"charge","match":{"grpc":{"method":"Refund"}},"timeout":"1s"}]}`, false},
	{"route sets nothing", `{"targetRef":{"name":"payments"},"routes":[{"name":"charge","match":{"grpc":{"method":"Charge"}}}]}`, false},
	{"route no match", `{"targetRef":{"name":"payments"},"routes":[{"name":"charge","timeout":"1s"}]}`, false},
	{"route empty match", `{"targetRef":{"name":"payments"},"routes":[{"name":"charge","match":{},"timeout":"1s"}]}`, false},
	{"route gRPC and HTTP match", `{"targetRef":{"name":"payments"},"routes":[{"name":"charge","match":{"grpc":{"method":"Charge"},"http":{"method":"POST"}},"timeout":"1s"}]}`, false},
	{"route gRPC empty", `{"targetRef":{"name":"payments"},"routes":[{"name":"charge","match":{"grpc":{}},"timeout":"1s"}]}`, false},
	{"route gRPC method and service", `{"targetRef":{"name":"payments"},"routes":[{"name":"charge","match":{"grpc":{"method":"Charge","service":"meshplane.payments.v1.PaymentService"}},"timeout":"1s"}]}`, false},
	{"route gRPC method with leading slash", `{"targetRef":{"name":"payments"},"routes":[{"name":"charge","match":{"grpc":{"method":"/meshplane.payments.v1.PaymentService/Charge"}},"timeout":"1s"}]}`, false},
	{"route gRPC method two slashes", `{"targetRef":{"name":"payments"},"routes":[{"name":"charge","match":{"grpc":{"method":"a/b/Charge"}},"timeout":"1s"}]}`, false},
	{"route gRPC method empty", `{"targetRef":{"name":"payments"},"routes":[{"name":"charge","match":{"grpc":{"method":""}},"timeout":"1s"}]}`, false},
	{"route gRPC service with slash", `{"targetRef":{"name":"payments"},"routes":[{"name":"charge","match":{"grpc":{"service":"meshplane.payments.v1.PaymentService/"}},"timeout":"1s"}]}`, false},
	{"route gRPC method 257 chars", `{"targetRef":{"name":"payments"},"routes":[{"name":"charge","match":{"grpc":{"method":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}},"timeout":"1s"}]}`, false},
	{"route HTTP empty", `{"targetRef":{"name":"payments"},"routes":[{"name":"all","match":{"http":{}},"timeout":"1s"}]}`, false},
	{"route HTTP prefix / alone", `{"targetRef":{"name":"payments"},"routes":[{"name":"all","match":{"http":{"path":{"type":"Prefix","value":"/"}}},"timeout":"1s"}]}`, false},
	{"route HTTP path without type", `{"targetRef":{"name":"payments"},"routes":[{"name":"a","match":{"http":{"path":{"value":"/v1"}}},"timeout":"1s"}]}`, false},
	{"route HTTP path without type, prefix /", `{"targetRef":{"name":"payments"},"routes":[{"name":"a","match":{"http":{"path":{"value":"/"}}},"timeout":"1s"}]}`, false},
	{"route HTTP path type Regex", `{"targetRef":{"name":"payments"},"routes":[{"name":"a","match":{"http":{"path":{"type":"Regex","value":"/v1"}}},"timeout":"1s"}]}`, false},
	{"route HTTP path without slash", `{"targetRef":{"name":"payments"},"routes":[{"name":"a","match":{"http":{"path":{"type":"Exact","value":"v1"}}},"timeout":"1s"}]}`, false},
	{"route HTTP path with query", `{"targetRef":{"name":"payments"},"routes":[{"name":"a","match":{"http":{"path":{"type":"Exact","value":"/v1?x=1"}}},"timeout":"1s"}]}`, false},
	{"route HTTP path with space", `{"targetRef":{"name":"payments"},"routes":[{"name":"a","match":{"http":{"path":{"type":"Exact","value":"/v1 x"}}},"timeout":"1s"}]}`, false},
	{"route HTTP path 257 chars", `{"targetRef":{"name":"payments"},"routes":[{"name":"a","match":{"http":{"path":{"type":"Exact","value":"/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}}},"timeout":"1s"}]}`, false},
	{"route HTTP method lowercase", `{"targetRef":{"name":"payments"},"routes":[{"name":"a","match":{"http":{"method":"post"}},"timeout":"1s"}]}`, false},
	{"route HTTP method CONNECT", `{"targetRef":{"name":"payments"},"routes":[{"name":"a","match":{"http":{"method":"CONNECT"}},"timeout":"1s"}]}`, false},
	{"route HTTP headers empty", `{"targetRef":{"name":"payments"},"routes":[{"name":"a","match":{"http":{"headers":[]}},"timeout":"1s"}]}`, false},
	{"route HTTP 5 headers", `{"targetRef":{"name":"payments"},"routes":[{"name":"a","match":{"http":{"headers":[{"name":"a","value":"1"},{"name":"b","value":"1"},{"name":"c","value":"1"},{"name":"d","value":"1"},{"name":"e","value":"1"}]}},"timeout":"1s"}]}`, false},
	{"route HTTP header uppercase", `{"targetRef":{"name":"payments"},"routes":[{"name":"a","match":{"http":{"headers":[{"name":"X-Tenant","value":"gold"}]}},"timeout":"1s"}]}`, false},
	{"route HTTP header method", `{"targetRef":{"name":"payments"},"routes":[{"name":"a","match":{"http":{"headers":[{"name":"method","value":"GET"}]}},"timeout":"1s"}]}`, false},
	{"route HTTP header duplicate", `{"targetRef":{"name":"payments"},"routes":[{"name":"a","match":{"http":{"headers":[{"name":"x-a","value":"1"},{"name":"x-a","value":"2"}]}},"timeout":"1s"}]}`, false},
	{"route HTTP header empty value", `{"targetRef":{"name":"payments"},"routes":[{"name":"a","match":{"http":{"headers":[{"name":"x-a","value":""}]}},"timeout":"1s"}]}`, false},
	{"route HTTP header no value", `{"targetRef":{"name":"payments"},"routes":[{"name":"a","match":{"http":{"headers":[{"name":"x-a"}]}},"timeout":"1s"}]}`, false},
	{"routes same gRPC method", `{"targetRef":{"name":"payments"},"routes":[{"name":"charge","match":{"grpc":{"method":"Charge"}},"retries":{"attempts":0}},{"name":"charge-again","match":{"grpc":{"method":"Charge"}},"timeout":"1s"}]}`, false},
	{"routes same HTTP match, headers reordered", `{"targetRef":{"name":"payments"},"routes":[{"name":"a","match":{"http":{"path":{"type":"Prefix","value":"/v1"},"headers":[{"name":"x-a","value":"1"},{"name":"x-b","value":"2"}]}},"timeout":"1s"},{"name":"b","match":{"http":{"path":{"type":"Prefix","value":"/v1"},"headers":[{"name":"x-b","value":"2"},{"name":"x-a","value":"1"}]}},"timeout":"2s"}]}`, false},
	{"routes same HTTP match, no path and prefix /", `{"targetRef":{"name":"payments"},"routes":[{"name":"a","match":{"http":{"method":"POST"}},"timeout":"1s"},{"name":"b","match":{"http":{"path":{"type":"Prefix","value":"/"},"method":"POST"}},"timeout":"2s"}]}`, false},
	{"route perTryTimeout exceeds own timeout", `{"targetRef":{"name":"payments"},"routes":[{"name":"get","match":{"grpc":{"method":"GetProduct"}},"timeout":"1s","retries":{"attempts":2,"perTryTimeout":"2s"}}]}`, false},
	{"route perTryTimeout exceeds inherited timeout", `{"targetRef":{"name":"payments"},"timeout":"1s","routes":[{"name":"get","match":{"grpc":{"method":"GetProduct"}},"retries":{"attempts":2,"perTryTimeout":"2s"}}]}`, false},
	{"route timeout below inherited perTryTimeout", `{"targetRef":{"name":"payments"},"timeout":"3s","retries":{"attempts":1,"perTryTimeout":"1s"},"routes":[{"name":"get","match":{"grpc":{"method":"GetProduct"}},"timeout":"100ms"}]}`, false},
	{"route retries attempts 0 with retryOn", `{"targetRef":{"name":"payments"},"routes":[{"name":"charge","match":{"grpc":{"method":"Charge"}},"retries":{"attempts":0,"retryOn":["unavailable"]}}]}`, false},
	{"route timeout 0s", `{"targetRef":{"name":"payments"},"routes":[{"name":"charge","match":{"grpc":{"method":"Charge"}},"timeout":"0s"}]}`, false},
	{"fault empty", `{"targetRef":{"name":"payments"},"fault":{}}`, false},
	{"fault delay without fixedDelay", `{"targetRef":{"name":"payments"},"fault":{"delay":{"percentage":50}}}`, false},
	{"fault delay 0s", `{"targetRef":{"name":"payments"},"fault":{"delay":{"fixedDelay":"0s","percentage":50}}}`, false},
	{"fault delay percentage 101", `{"targetRef":{"name":"payments"},"fault":{"delay":{"fixedDelay":"1s","percentage":101}}}`, false},
	{"fault delay percentage negative", `{"targetRef":{"name":"payments"},"fault":{"delay":{"fixedDelay":"1s","percentage":-1}}}`, false},
	{"fault delay without percentage", `{"targetRef":{"name":"payments"},"fault":{"delay":{"fixedDelay":"1s"}}}`, false},
	{"fault abort without code", `{"targetRef":{"name":"payments"},"fault":{"abort":{"percentage":10}}}`, false},
	{"fault abort code as a number", `{"targetRef":{"name":"payments"},"fault":{"abort":{"percentage":10,"code":503}}}`, false},
	{"fault abort HTTP 200", `{"targetRef":{"name":"payments"},"fault":{"abort":{"percentage":10,"code":"200"}}}`, false},
	{"fault abort HTTP 600", `{"targetRef":{"name":"payments"},"fault":{"abort":{"percentage":10,"code":"600"}}}`, false},
	{"fault abort gRPC OK", `{"targetRef":{"name":"payments"},"fault":{"abort":{"percentage":10,"code":"OK"}}}`, false},
	{"fault abort gRPC lowercase", `{"targetRef":{"name":"payments"},"fault":{"abort":{"percentage":10,"code":"unavailable"}}}`, false},
	{"fault abort without percentage", `{"targetRef":{"name":"payments"},"fault":{"abort":{"code":"UNAVAILABLE"}}}`, false},
	{"fault abort percentage 101", `{"targetRef":{"name":"payments"},"fault":{"abort":{"percentage":101,"code":"UNAVAILABLE"}}}`, false},
	{"timeout 33 characters", `{"targetRef":{"name":"payments"},"timeout":"1s1s1s1s1s1s1s1s1s1s1s1s1s1s1s1s1"}`, false},

	// canary
	{"canary minimal", canarySpec(stagedSplit, canaryMinimal), true},
	{"canary every field", canarySpec(stagedSplit, `{"stable":"v1","candidate":"v2","steps":[5,10,25,50,100],"interval":"2m","analysis":{"objective":"99.95","maxBurnRate":"14.4","stableMargin":"0.5","latency":{"quantile":"0.99","max":"300ms"},"minRequests":200,"maxHolds":5,"failureThreshold":3,"scrapeInterval":"30s"},"paused":true,"abort":false}`), true},
	{"canary one step", canarySpec(stagedSplit, `{"stable":"v1","candidate":"v2","steps":[100],"interval":"30s","analysis":{"objective":"99","maxBurnRate":"1","minRequests":1}}`), true},
	{"canary interval twice scrapeInterval", canarySpec(stagedSplit, `{"stable":"v1","candidate":"v2","steps":[50,100],"interval":"2s","analysis":{"objective":"99.9","maxBurnRate":"10","minRequests":10,"scrapeInterval":"1s"}}`), true},
	{"canary with routes", `{"targetRef":{"name":"payments"},"routes":[{"name":"charge","match":{"grpc":{"method":"Charge"}},"retries":{"attempts":0}}],` + stagedSplitField + `,"canary":` + canaryMinimal + `}`, true},
	{"canary third subset at 0", canarySpec(`[{"subset":"v1","labels":{"version":"v1"},"weight":100},{"subset":"v2","labels":{"version":"v2"},"weight":0},{"subset":"v3","labels":{"version":"v3"},"weight":0}]`, canaryMinimal), true},
	{"canary objective 99.9999", canarySpec(stagedSplit, withAnalysis(`"objective":"99.9999","maxBurnRate":"10","minRequests":100`)), true},
	{"canary burn just allows a success", canarySpec(stagedSplit, withAnalysis(`"objective":"99","maxBurnRate":"99.9999","minRequests":100`)), true},
	{"canary stableMargin 0", canarySpec(stagedSplit, withAnalysis(`"objective":"99.9","maxBurnRate":"10","stableMargin":"0","minRequests":100`)), true},
	{"canary without split", `{"targetRef":{"name":"payments"},"canary":` + canaryMinimal + `}`, false},
	{"canary unknown stable", canarySpec(stagedSplit, `{"stable":"v0","candidate":"v2","steps":[10,100],"interval":"1m","analysis":{"objective":"99.9","maxBurnRate":"10","minRequests":100}}`), false},
	{"canary unknown candidate", canarySpec(stagedSplit, `{"stable":"v1","candidate":"v3","steps":[10,100],"interval":"1m","analysis":{"objective":"99.9","maxBurnRate":"10","minRequests":100}}`), false},
	{"canary stable is candidate", canarySpec(stagedSplit, `{"stable":"v1","candidate":"v1","steps":[10,100],"interval":"1m","analysis":{"objective":"99.9","maxBurnRate":"10","minRequests":100}}`), false},
	{"canary stable not a DNS label", canarySpec(stagedSplit, `{"stable":"V1","candidate":"v2","steps":[10,100],"interval":"1m","analysis":{"objective":"99.9","maxBurnRate":"10","minRequests":100}}`), false},
	{"canary no stable", canarySpec(stagedSplit, `{"candidate":"v2","steps":[10,100],"interval":"1m","analysis":{"objective":"99.9","maxBurnRate":"10","minRequests":100}}`), false},
	{"canary stable weight 90", canarySpec(`[{"subset":"v1","labels":{"version":"v1"},"weight":90},{"subset":"v2","labels":{"version":"v2"},"weight":10}]`, canaryMinimal), false},
	{"canary stable weight 0", canarySpec(`[{"subset":"v1","labels":{"version":"v1"},"weight":0},{"subset":"v2","labels":{"version":"v2"},"weight":100}]`, canaryMinimal), false},
	{"canary steps not increasing", canarySpec(stagedSplit, withSteps(`[10,50,25,100]`)), false},
	{"canary steps repeat", canarySpec(stagedSplit, withSteps(`[10,10,100]`)), false},
	{"canary steps not ending at 100", canarySpec(stagedSplit, withSteps(`[10,50]`)), false},
	{"canary steps empty", canarySpec(stagedSplit, withSteps(`[]`)), false},
	{"canary step 0", canarySpec(stagedSplit, withSteps(`[0,100]`)), false},
	{"canary step 101", canarySpec(stagedSplit, withSteps(`[10,101]`)), false},
	{"canary 11 steps", canarySpec(stagedSplit, withSteps(`[1,2,3,4,5,6,7,8,9,10,100]`)), false},
	{"canary no steps", canarySpec(stagedSplit, `{"stable":"v1","candidate":"v2","interval":"1m","analysis":{"objective":"99.9","maxBurnRate":"10","minRequests":100}}`), false},
	{"canary interval below twice the default scrape", canarySpec(stagedSplit, withInterval(`20s`, ``)), false},
	{"canary interval below twice scrapeInterval", canarySpec(stagedSplit, withInterval(`9s`, `,"scrapeInterval":"5s"`)), false},
	{"canary interval malformed", canarySpec(stagedSplit, withInterval(`soon`, ``)), false},
	{"canary scrapeInterval malformed", canarySpec(stagedSplit, withInterval(`1m`, `,"scrapeInterval":"often"`)), false},
	{"canary no interval", canarySpec(stagedSplit, `{"stable":"v1","candidate":"v2","steps":[10,100],"analysis":{"objective":"99.9","maxBurnRate":"10","minRequests":100}}`), false},
	{"canary no analysis", canarySpec(stagedSplit, `{"stable":"v1","candidate":"v2","steps":[10,100],"interval":"1m"}`), false},
	{"canary objective 100", canarySpec(stagedSplit, withAnalysis(`"objective":"100","maxBurnRate":"10","minRequests":100`)), false},
	{"canary objective 0", canarySpec(stagedSplit, withAnalysis(`"objective":"0","maxBurnRate":"10","minRequests":100`)), false},
	{"canary objective 100.5", canarySpec(stagedSplit, withAnalysis(`"objective":"100.5","maxBurnRate":"10","minRequests":100`)), false},
	{"canary objective words", canarySpec(stagedSplit, withAnalysis(`"objective":"three nines","maxBurnRate":"10","minRequests":100`)), false},
	{"canary objective a number", canarySpec(stagedSplit, withAnalysis(`"objective":99.9,"maxBurnRate":"10","minRequests":100`)), false},
	{"canary objective missing", canarySpec(stagedSplit, withAnalysis(`"maxBurnRate":"10","minRequests":100`)), false},
	{"canary maxBurnRate 0", canarySpec(stagedSplit, withAnalysis(`"objective":"99.9","maxBurnRate":"0","minRequests":100`)), false},
	{"canary maxBurnRate allows every call to fail", canarySpec(stagedSplit, withAnalysis(`"objective":"90","maxBurnRate":"10","minRequests":100`)), false},
	{"canary stableMargin 100", canarySpec(stagedSplit, withAnalysis(`"objective":"99.9","maxBurnRate":"10","stableMargin":"100","minRequests":100`)), false},
	{"canary latency quantile 0", canarySpec(stagedSplit, withAnalysis(`"objective":"99.9","maxBurnRate":"10","latency":{"quantile":"0.0","max":"1s"},"minRequests":100`)), false},
	{"canary latency quantile 1", canarySpec(stagedSplit, withAnalysis(`"objective":"99.9","maxBurnRate":"10","latency":{"quantile":"1","max":"1s"},"minRequests":100`)), false},
	{"canary latency without max", canarySpec(stagedSplit, withAnalysis(`"objective":"99.9","maxBurnRate":"10","latency":{"quantile":"0.99"},"minRequests":100`)), false},
	{"canary latency max 0s", canarySpec(stagedSplit, withAnalysis(`"objective":"99.9","maxBurnRate":"10","latency":{"quantile":"0.99","max":"0s"},"minRequests":100`)), false},
	{"canary minRequests 0", canarySpec(stagedSplit, withAnalysis(`"objective":"99.9","maxBurnRate":"10","minRequests":0`)), false},
	{"canary minRequests missing", canarySpec(stagedSplit, withAnalysis(`"objective":"99.9","maxBurnRate":"10"`)), false},
	{"canary maxHolds 0", canarySpec(stagedSplit, withAnalysis(`"objective":"99.9","maxBurnRate":"10","minRequests":100,"maxHolds":0`)), false},
	{"canary failureThreshold 11", canarySpec(stagedSplit, withAnalysis(`"objective":"99.9","maxBurnRate":"10","minRequests":100,"failureThreshold":11`)), false},
	{"canary paused a string", canarySpec(stagedSplit, `{"stable":"v1","candidate":"v2","steps":[10,100],"interval":"1m","analysis":{"objective":"99.9","maxBurnRate":"10","minRequests":100},"paused":"yes"}`), false},

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
	{"retries attempts 0 with perTryTimeout and retryOn", `{"targetRef":{"name":"orders"},"retries":{"attempts":0,"perTryTimeout":"1s","retryOn":["5xx"]}}`, []string{"spec.retries.perTryTimeout", "spec.retries.retryOn"}, []string{"must be unset when retries.attempts is 0"}},

	// routes: the field to change, and the routes or values concerned
	{"routes same gRPC method", `{"targetRef":{"name":"payments"},"routes":[{"name":"charge","match":{"grpc":{"method":"Charge"}},"retries":{"attempts":0}},{"name":"charge-again","match":{"grpc":{"method":"Charge"}},"timeout":"1s"}]}`, []string{"spec.routes"}, []string{`["charge", "charge-again"]`, "match the same calls"}},
	{"route perTryTimeout exceeds inherited timeout", `{"targetRef":{"name":"payments"},"timeout":"1s","routes":[{"name":"get","match":{"grpc":{"method":"GetProduct"}},"retries":{"attempts":2,"perTryTimeout":"2s"}}]}`, []string{"spec.routes"}, []string{`["get"]`, "spec.timeout (1s)"}},
	{"route timeout below inherited perTryTimeout", `{"targetRef":{"name":"payments"},"timeout":"3s","retries":{"attempts":1,"perTryTimeout":"1s"},"routes":[{"name":"get","match":{"grpc":{"method":"GetProduct"}},"timeout":"100ms"}]}`, []string{"spec.routes"}, []string{`["get"]`, "spec.retries.perTryTimeout (1s)"}},
	{"route perTryTimeout exceeds own timeout", `{"targetRef":{"name":"payments"},"routes":[{"name":"get","match":{"grpc":{"method":"GetProduct"}},"timeout":"1s","retries":{"attempts":2,"perTryTimeout":"2s"}}]}`, []string{"spec.routes[0].retries.perTryTimeout"}, []string{"(2s)", "timeout of the route (1s)"}},
	{"route HTTP prefix / alone", `{"targetRef":{"name":"payments"},"routes":[{"name":"all","match":{"http":{"path":{"type":"Prefix","value":"/"}}},"timeout":"1s"}]}`, []string{"spec.routes[0].match.http"}, []string{"matches every request"}},
	{"route HTTP empty", `{"targetRef":{"name":"payments"},"routes":[{"name":"all","match":{"http":{}},"timeout":"1s"}]}`, []string{"spec.routes[0].match.http"}, []string{"matches every request"}},
	{"route sets nothing", `{"targetRef":{"name":"payments"},"routes":[{"name":"charge","match":{"grpc":{"method":"Charge"}}}]}`, []string{"spec.routes[0].name"}, []string{"sets nothing of its own"}},
	{"route named default", `{"targetRef":{"name":"payments"},"routes":[{"name":"default","match":{"grpc":{"method":"Charge"}},"timeout":"1s"}]}`, []string{"spec.routes[0].name"}, []string{"default is the name of the route that takes every other call"}},
	{"route empty match is not also an overlap", `{"targetRef":{"name":"payments"},"routes":[{"name":"a","match":{},"timeout":"1s"},{"name":"b","match":{"grpc":{"method":"Charge"}},"timeout":"1s"}]}`, []string{"spec.routes[0].match"}, []string{"set exactly one of grpc"}},
	{"route gRPC and HTTP match", `{"targetRef":{"name":"payments"},"routes":[{"name":"charge","match":{"grpc":{"method":"Charge"},"http":{"method":"POST"}},"timeout":"1s"}]}`, []string{"spec.routes[0].match"}, []string{"set exactly one of grpc"}},
	{"route gRPC method and service", `{"targetRef":{"name":"payments"},"routes":[{"name":"charge","match":{"grpc":{"method":"Charge","service":"meshplane.payments.v1.PaymentService"}},"timeout":"1s"}]}`, []string{"spec.routes[0].match.grpc"}, []string{"set exactly one of method"}},
	{"route gRPC bad method", `{"targetRef":{"name":"payments"},"routes":[{"name":"charge","match":{"grpc":{"method":"a/b/Charge"}},"timeout":"1s"}]}`, []string{"spec.routes[0].match.grpc.method"}, []string{`"a/b/Charge"`}},
	{"route HTTP header method", `{"targetRef":{"name":"payments"},"routes":[{"name":"a","match":{"http":{"headers":[{"name":"method","value":"GET"}]}},"timeout":"1s"}]}`, []string{"spec.routes[0].match.http.headers[0].name"}, []string{"Istio ignores header matches on method"}},
	{"route retries attempts 0 with perTryTimeout", `{"targetRef":{"name":"payments"},"routes":[{"name":"charge","match":{"grpc":{"method":"Charge"}},"retries":{"attempts":0,"perTryTimeout":"1s"}}]}`, []string{"spec.routes[0].retries.perTryTimeout"}, []string{"must be unset when retries.attempts is 0"}},
	{"fault abort code OK", `{"targetRef":{"name":"payments"},"fault":{"abort":{"percentage":10,"code":"OK"}}}`, []string{"spec.fault.abort.code"}, []string{"OK is not a gRPC code other than OK"}},
	{"fault delay percentage 101", `{"targetRef":{"name":"payments"},"fault":{"delay":{"fixedDelay":"1s","percentage":101}}}`, []string{"spec.fault.delay.percentage"}, []string{"101"}},
	{"fault abort percentage negative", `{"targetRef":{"name":"payments"},"routes":[{"name":"charge","match":{"grpc":{"method":"Charge"}},"fault":{"abort":{"percentage":-5,"code":"UNAVAILABLE"}}}]}`, []string{"spec.routes[0].fault.abort.percentage"}, []string{"-5"}},
	{"fault delay banana", `{"targetRef":{"name":"payments"},"fault":{"delay":{"fixedDelay":"banana","percentage":10}}}`, []string{"spec.fault.delay.fixedDelay"}, []string{`"banana"`}},
	// canary: the field to change, the subset or values concerned
	{"canary without split", `{"targetRef":{"name":"payments"},"canary":` + canaryMinimal + `}`, []string{"spec.split"}, []string{"spec.canary needs spec.split"}},
	{"canary unknown candidate", canarySpec(stagedSplit, `{"stable":"v1","candidate":"v3","steps":[10,100],"interval":"1m","analysis":{"objective":"99.9","maxBurnRate":"10","minRequests":100}}`), []string{"spec.canary.candidate"}, []string{"v3 is not a subset of spec.split"}},
	{"canary stable is candidate", canarySpec(stagedSplit, `{"stable":"v1","candidate":"v1","steps":[10,100],"interval":"1m","analysis":{"objective":"99.9","maxBurnRate":"10","minRequests":100}}`), []string{"spec.canary.candidate"}, []string{"must differ from stable"}},
	{"canary stable weight 90", canarySpec(`[{"subset":"v1","labels":{"version":"v1"},"weight":90},{"subset":"v2","labels":{"version":"v2"},"weight":10}]`, canaryMinimal), []string{"spec.split"}, []string{"the stable subset v1 has weight 90", "must have 100"}},
	{"canary steps not increasing", canarySpec(stagedSplit, withSteps(`[10,50,25,100]`)), []string{"spec.canary.steps"}, []string{"must increase strictly"}},
	{"canary steps not ending at 100", canarySpec(stagedSplit, withSteps(`[10,50]`)), []string{"spec.canary.steps"}, []string{"must end at 100", "not 50"}},
	{"canary interval below twice the default scrape", canarySpec(stagedSplit, withInterval(`20s`, ``)), []string{"spec.canary.interval"}, []string{"20s is shorter than twice analysis.scrapeInterval (15s)"}},
	{"canary interval below twice scrapeInterval", canarySpec(stagedSplit, withInterval(`9s`, `,"scrapeInterval":"5s"`)), []string{"spec.canary.interval"}, []string{"9s is shorter than twice analysis.scrapeInterval (5s)"}},
	{"canary interval malformed", canarySpec(stagedSplit, withInterval(`soon`, ``)), []string{"spec.canary.interval"}, []string{`"soon"`}},
	{"canary objective 100", canarySpec(stagedSplit, withAnalysis(`"objective":"100","maxBurnRate":"10","minRequests":100`)), []string{"spec.canary.analysis.objective"}, []string{"100 is not a percentage strictly between 0 and 100"}},
	{"canary objective a word", canarySpec(stagedSplit, withAnalysis(`"objective":"high","maxBurnRate":"10","minRequests":100`)), []string{"spec.canary.analysis.objective"}, []string{`"high"`}},
	{"canary maxBurnRate allows every call to fail", canarySpec(stagedSplit, withAnalysis(`"objective":"90","maxBurnRate":"10","minRequests":100`)), []string{"spec.canary.analysis.maxBurnRate"}, []string{"maxBurnRate 10 times the error budget of objective 90 allows every call to fail"}},
}

// The canary cases' pieces: a split staged for a canary (v1 100, v2 0) and a minimal canary over it.
const (
	stagedSplit      = `[{"subset":"v1","labels":{"version":"v1"},"weight":100},{"subset":"v2","labels":{"version":"v2"},"weight":0}]`
	stagedSplitField = `"split":` + stagedSplit
	canaryMinimal    = `{"stable":"v1","candidate":"v2","steps":[10,25,50,100],"interval":"1m","analysis":{"objective":"99.9","maxBurnRate":"10","minRequests":100}}`
)

// canarySpec is a payments policy with split and canary as raw JSON.
func canarySpec(split, canary string) string {
	return `{"targetRef":{"name":"payments"},"split":` + split + `,"canary":` + canary + `}`
}

// withSteps is a minimal canary with other steps.
func withSteps(steps string) string {
	return `{"stable":"v1","candidate":"v2","steps":` + steps + `,"interval":"1m","analysis":{"objective":"99.9","maxBurnRate":"10","minRequests":100}}`
}

// withInterval is a minimal canary with another interval; analysisExtra adds analysis fields (",..." or "").
func withInterval(interval, analysisExtra string) string {
	return `{"stable":"v1","candidate":"v2","steps":[10,100],"interval":"` + interval + `","analysis":{"objective":"99.9","maxBurnRate":"10","minRequests":100` + analysisExtra + `}}`
}

// withAnalysis is a minimal canary with the analysis fields given.
func withAnalysis(fields string) string {
	return `{"stable":"v1","candidate":"v2","steps":[10,100],"interval":"1m","analysis":{` + fields + `}}`
}
