#ifndef CUSTOMER_WORKER_BENCH_RELAY_H
#define CUSTOMER_WORKER_BENCH_RELAY_H

#include <stddef.h>
#include <stdint.h>

/// The benchmark's ceiling: one connection, commands consumed on channel 1 with a prefetch window,
/// one reply per command published on channel 2 with publisher confirms, and the commands
/// acknowledged with `multiple` once their replies are confirmed. No domain work: what it costs is
/// what the broker costs for the worker's traffic, plus a few microseconds of its own per message.
typedef struct cw_relay cw_relay;

/// A relay for `queue` that answers each command with `body` (the worker's own reply, byte for
/// byte) to `exchange` with `routing_key`, or to the command's `reply_to` address through the
/// default exchange when it has one, copying the command's correlation id. Copies every
/// argument; `idempotency_key` may be NULL. Returns NULL when out of memory.
cw_relay *cw_relay_new(const char *host, int port, const char *user, const char *password, const char *vhost,
                       const char *queue, uint16_t prefetch, const char *exchange, const char *routing_key,
                       const void *body, size_t body_length, const char *type, const char *content_type,
                       const char *app_id, const char *idempotency_key);

/// Connects and relays on the calling thread until `cw_relay_stop` (noticed within 100 ms) or an
/// error. Returns 0 on a clean stop, -1 on an error (see `cw_relay_error`). Call it once.
int cw_relay_run(cw_relay *relay);

/// Asks a running relay to stop; safe from any thread.
void cw_relay_stop(cw_relay *relay);

/// After `cw_relay_run` returned: commands relayed (reply confirmed, command acknowledged), the
/// CPU time of the relaying thread (user + system, connection set-up excluded), and the error.
uint64_t cw_relay_relayed(const cw_relay *relay);
uint64_t cw_relay_cpu_nanoseconds(const cw_relay *relay);
const char *cw_relay_error(const cw_relay *relay);

void cw_relay_free(cw_relay *relay);

#endif
