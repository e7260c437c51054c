/* srv_admin.h - the admin API (SERVING.md "Admin"): its route table and bearer-token check,
 * served on a listener of its own (srv_http.h), never on the inference port.
 *
 *   GET    /admin/models                                every model: its versions (store),
 *                                                       which is active and which serving
 *   POST   /admin/models/{m}/prune?remove=K&...         body: a tar of class/file.jpg|png,
 *                                                       streamed into a spool folder; 202 {"job"}
 *   GET    /admin/jobs/{id}                             the job (srv_job.h job_json)
 *   DELETE /admin/jobs/{id}                             cancel; answers the job
 *   POST   /admin/models/{m}/versions/{v}/activate      roll back (or forward) to a stored version
 *
 * Every request must carry "Authorization: Bearer <token>"; a missing or wrong token is 401
 * before routing and before any body byte is read, so nothing about the paths is revealed
 * and nothing changes. The token comes from VITD_ADMIN_TOKEN, else from the file named by
 * admin_token_file; only its SHA-256 is kept, and a presented token is hashed and the two
 * digests compared in constant time (the time does not depend on where they differ or on
 * the presented token's length). Without a token the admin listener is not started.
 *
 * Prune parameters (query string; anything else is 400): remove (K, required, 1.. attention
 * blocks the active version has left), strategy (nose | first | random; nose), images (cap on
 * the proxy images, 0 = all; 0), seed (0), gate (0..1; job_gate), finetune_epochs (0..1000;
 * 0). The body's Content-Type must be application/x-tar or application/octet-stream (else
 * 415). Upload failures: a bad archive 400 naming the entry and the problem, over a limit 413
 * (admin_max_archive_bytes, _entries, _entry_bytes), a job already queued or running 409 (checked
 * before the body is read, and again at submission), unknown model 404. Whatever fails, the
 * spool folder is removed; on success the job takes it over.
 * Spool folders: <store_dir>/.spool/up-<n>-<random>; leftovers of a crash are removed by
 * admin_init.
 *
 * Threads: admin_load_token once in main's thread before any other thread exists (it clears
 * VITD_ADMIN_TOKEN from the environment, so child processes never see it); admin_init before
 * the admin listener starts; handlers on the admin listener's HTTP threads.
 */
#ifndef VT_SRV_ADMIN_H
#define VT_SRV_ADMIN_H

#include <stddef.h>

#include "srv_config.h"
#include "srv_http.h"
#include "srv_store.h"

/* Reads the token. 1: a token is configured; 0: none (msg says why the listener will not
 * start); -1: admin_token_file is set but unusable (unreadable, empty): msg says why. */
int admin_load_token(const conf_t *c, char *msg, size_t msglen);

/* The store (borrowed for the server's life) and the configuration; creates
 * <store_dir>/.spool and removes upload folders left there by a crash. */
int admin_init(const conf_t *c, store *st, char *err, size_t errlen);

const http_route *admin_routes(int *n);
int admin_admit(http_req *r);   /* http_opts.admit of the admin listener: 401 or 0 */

#endif
