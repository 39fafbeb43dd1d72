// customer-worker-relay: the benchmark's ceiling as a process of its own, as an outside harness
// runs it (so the relay shares no address space, allocator or scheduler with the benchmark that
// publishes and times the commands). The benchmark starts one per worker replica and stops it with
// SIGTERM; it then prints what it relayed and its CPU time on standard output. A command with a
// `reply_to` (the tenants mode's probes, sent with direct reply-to) is answered there instead of
// to EXCHANGE and ROUTING_KEY.
//
//   customer-worker-relay HOST PORT USER VHOST QUEUE PREFETCH EXCHANGE ROUTING_KEY REPLY_FILE TYPE
//                         CONTENT_TYPE APP_ID [IDEMPOTENCY_KEY]
//
// The password comes from the environment (RELAY_AMQP_PASSWORD), never the command line, which
// any user of the machine can read. Output, one line: `relayed <count> cpu_ns <nanoseconds>`.
// Exit status: 0 after a clean stop, 1 on the relay's error (on standard error), 2 on bad arguments.
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_relay.h"

static cw_relay *running;

// SIGTERM and SIGINT: cw_relay_stop is one lock-free atomic store, safe in a signal handler; the
// relay notices it within 100 ms.
static void on_stop_signal(int signal_number) {
    (void)signal_number;
    if (running) cw_relay_stop(running);
}

static int read_file(const char *path, void **bytes, size_t *length) {
    FILE *file = fopen(path, "rb");
    if (!file) return errno;
    size_t capacity = 4096, used = 0;
    unsigned char *buffer = malloc(capacity);
    while (buffer) {
        size_t got = fread(buffer + used, 1, capacity - used, file);
        used += got;
        if (used < capacity) break;
        capacity *= 2;
        unsigned char *grown = realloc(buffer, capacity);
        if (!grown) { free(buffer); buffer = NULL; }
        else buffer = grown;
    }
    int failed = ferror(file);
    fclose(file);
    if (!buffer) return ENOMEM;
    if (failed) { free(buffer); return EIO; }
    *bytes = buffer;
    *length = used;
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 13 && argc != 14) {
        fprintf(stderr, "usage: %s HOST PORT USER VHOST QUEUE PREFETCH EXCHANGE ROUTING_KEY REPLY_FILE TYPE CONTENT_TYPE APP_ID "
                        "[IDEMPOTENCY_KEY] (password in RELAY_AMQP_PASSWORD)\n", argv[0]);
        return 2;
    }
    char *end;
    long port = strtol(argv[2], &end, 10);
    if (*end || port <= 0 || port > 65535) { fprintf(stderr, "PORT: a number in 1...65535, not '%s'\n", argv[2]); return 2; }
    long prefetch = strtol(argv[6], &end, 10);
    if (*end || prefetch <= 0 || prefetch > 65535) { fprintf(stderr, "PREFETCH: a number in 1...65535, not '%s'\n", argv[6]); return 2; }
    const char *password = getenv("RELAY_AMQP_PASSWORD");
    if (!password) { fprintf(stderr, "RELAY_AMQP_PASSWORD is not set\n"); return 2; }
    void *reply;
    size_t reply_length;
    int code = read_file(argv[9], &reply, &reply_length);
    if (code) { fprintf(stderr, "cannot read the reply from %s: %s\n", argv[9], strerror(code)); return 2; }

    running = cw_relay_new(argv[1], (int)port, argv[3], password, argv[4], argv[5], (uint16_t)prefetch, argv[7], argv[8],
                           reply, reply_length, argv[10], argv[11], argv[12], argc == 14 ? argv[13] : NULL);
    free(reply);
    if (!running) { fprintf(stderr, "out of memory\n"); return 1; }
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_stop_signal;
    sigemptyset(&action.sa_mask);
    sigaction(SIGTERM, &action, NULL);
    sigaction(SIGINT, &action, NULL);

    int status = cw_relay_run(running);
    if (status != 0) {
        fprintf(stderr, "%s\n", cw_relay_error(running));
        cw_relay_free(running);
        return 1;
    }
    printf("relayed %" PRIu64 " cpu_ns %" PRIu64 "\n", cw_relay_relayed(running), cw_relay_cpu_nanoseconds(running));
    cw_relay_free(running);
    return 0;
}
