/* cmd.h - the vitd command line: one function per sub-command, one table in main.c.
 *
 * Each cmd_* takes the arguments after the command name (argv[0] is the command name) and
 * returns the process exit status: 0 success, 1 failure (message on stderr), 2 usage error.
 * Commands print results on stdout and errors on stderr as "vitd CMD: message".
 */
#ifndef VT_CMD_H
#define VT_CMD_H

#include <stddef.h>

int cmd_inspect(int argc, char **argv);
int cmd_preprocess(int argc, char **argv);
int cmd_logits(int argc, char **argv);
int cmd_classify(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_finetune(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_entropy(int argc, char **argv);
int cmd_prune(int argc, char **argv);

/* Shared helpers for commands (cli.c). */
/* Reads a whole file into a malloc'd buffer; NULL with errno set on failure. */
unsigned char *cli_read_file(const char *path, size_t *len);
/* Parses "0,2,4" into a bit mask of block indices < limit; -1 on a malformed list. */
int cli_parse_blocks(const char *s, int limit, unsigned long long *mask);
/* Option matching for "--opt VALUE" and "--opt=VALUE": returns 1 and sets *val (advancing
 * *i past a separate value) when argv[*i] is opt, 0 when it is not, -1 (after printing a
 * message) when the value is missing. With val == NULL, matches a flag without value. */
int cli_opt(int argc, char **argv, int *i, const char *opt, const char **val);
/* GNU OpenMP reads GOMP_SPINCOUNT when the program is loaded, so setting it means running
 * the program again: unless the user set GOMP_SPINCOUNT or OMP_WAIT_POLICY, re-executes
 * argv (the full command line, argv[0] included) with GOMP_SPINCOUNT=spins. Returns only when
 * it did not re-execute (already done, the user's setting wins, spins < 0, or exec failed).
 * active (with spins > 0): also OMP_WAIT_POLICY=active. libgomp counts a team started by a
 * thread other than the initial one (the server's workers) as oversubscription and then spins
 * only its "throttled" count, 100 unless the wait policy is active, which makes it
 * min(1000, GOMP_SPINCOUNT). Measured: DeiT-S served at concurrency 1, 23 -> 25 images/s. */
void cli_reexec_spincount(long spins, int active, int argc, char **argv);
/* Strict number parsing; 0 on success, -1 on garbage or out of [lo, hi]. */
int cli_int(const char *s, long lo, long hi, long *out);
int cli_float(const char *s, double *out);

#endif
