/* srv_api.h - the inference API: the route table and its handlers (SERVING.md).
 *
 *   GET  /v2                                   server metadata {name, version, extensions}
 *   GET  /v2/health/live, /v2/health/ready     200 or 503, answered on the HTTP thread
 *   GET  /v2/models/{m}[/versions/{v}]         model metadata {name, versions, platform, inputs, outputs}
 *   GET  /v2/models/{m}[/versions/{v}]/ready   200 or 503
 *   POST /v2/models/{m}[/versions/{v}]/infer   Open Inference Protocol, JSON (format below)
 *   POST /v1/models/{m}/classify?top_k=K       one image body, or multipart/form-data files
 *   GET  /metrics                              Prometheus text
 *
 * Infer request (JSON object; unknown keys are ignored, duplicate keys rejected):
 *   "id"          optional string, echoed
 *   "inputs"      exactly one tensor {"name": "input", "datatype", "shape", "data"}:
 *                   FP32,  shape [N, C, S, S]: preprocessed images, data flat or nested numbers
 *                   BYTES, shape [N]: data N strings, each a base64 JPEG or PNG
 *   "outputs"     optional [{"name": "logits", "parameters"?: {"classification": K}}]
 * Infer response: {"id"?, "model_name", "model_version", "outputs": [{"name": "logits",
 *   "datatype": "FP32", "shape": [N, classes], "data": [...]}]}; with classification K the
 *   output is BYTES, shape [N, K], "score:index:label" strings best first, where score is the
 *   softmax probability (as /v1 classify reports it).
 * Classify response: {"model", "version", "predictions": [[{"label", "index", "score"}...]...]}.
 *
 * Images are decoded and preprocessed on the HTTP thread; the request is then suspended and
 * queued for its model's worker (srv_batcher.h); the reply is built when the worker resumes it.
 * Threads: api_init before the HTTP daemon starts; handlers run on HTTP threads.
 */
#ifndef VT_SRV_API_H
#define VT_SRV_API_H

#include "srv_config.h"
#include "srv_http.h"

#define VITD_VERSION "0.1.0"

void api_init(const conf_t *c);                 /* borrowed for the server's life */
const http_route *api_routes(int *n);

#endif
