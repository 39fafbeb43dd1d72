#include "bench_relay.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if __has_include(<rabbitmq-c/amqp.h>)
#include <rabbitmq-c/amqp.h>
#include <rabbitmq-c/tcp_socket.h>
#else
#include <amqp.h>
#include <amqp_tcp_socket.h>
#endif

enum { CONSUME_CHANNEL = 1, PUBLISH_CHANNEL = 2 };
/// Publish sequence numbers in flight never exceed the prefetch window (one reply per unacked
/// command), so a ring this size maps each to its command's delivery tag.
enum { RING = 65536 };

typedef struct {
    char *host;
    int port;
    char *user;
    char *password;
    char *vhost;
    char *queue;
    uint16_t prefetch;
    char *exchange;
    char *routing_key;
    void *body;
    size_t body_length;
    char *type;
    char *content_type;
    char *app_id;
    char *idempotency_key;
} cw_relay_settings;

typedef struct {
    uint64_t relayed;
    uint64_t cpu_nanoseconds;
    char error[256];
} cw_relay_stats;

struct cw_relay {
    cw_relay_settings settings;
    atomic_int stop;
    cw_relay_stats stats;
};

static uint64_t thread_cpu_nanoseconds(void) {
    struct timespec now;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
    return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}

static int fail(cw_relay_stats *stats, const char *what, const char *detail) {
    snprintf(stats->error, sizeof stats->error, "%s: %s", what, detail);
    return -1;
}

static int check_rpc(amqp_connection_state_t conn, cw_relay_stats *stats, const char *what) {
    amqp_rpc_reply_t reply = amqp_get_rpc_reply(conn);
    if (reply.reply_type == AMQP_RESPONSE_NORMAL) return 0;
    if (reply.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION) return fail(stats, what, amqp_error_string2(reply.library_error));
    return fail(stats, what, "the broker refused it");
}

typedef struct {
    uint64_t delivery_tags[RING];
    unsigned char confirmed[RING];
    uint64_t published;        // last publish sequence number used
    uint64_t lowest_unsettled; // lowest sequence number not yet confirmed
} confirm_ring;

static int relay_loop(amqp_connection_state_t conn, const cw_relay_settings *s, const atomic_int *stop,
                      cw_relay_stats *stats, confirm_ring *ring) {
    amqp_table_entry_t header_entries[2];
    header_entries[0].key = amqp_cstring_bytes("x-replayed");
    header_entries[0].value.kind = AMQP_FIELD_KIND_BOOLEAN;
    header_entries[0].value.value.boolean = 0;
    int header_count = 1;
    if (s->idempotency_key) {
        header_entries[1].key = amqp_cstring_bytes("x-idempotency-key");
        header_entries[1].value.kind = AMQP_FIELD_KIND_UTF8;
        header_entries[1].value.value.bytes = amqp_cstring_bytes(s->idempotency_key);
        header_count = 2;
    }
    amqp_basic_properties_t props;
    memset(&props, 0, sizeof props);
    props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG |
                   AMQP_BASIC_TYPE_FLAG | AMQP_BASIC_APP_ID_FLAG | AMQP_BASIC_TIMESTAMP_FLAG;
    props.content_type = amqp_cstring_bytes(s->content_type);
    props.headers.num_entries = header_count;
    props.headers.entries = header_entries;
    props.delivery_mode = 2;
    props.type = amqp_cstring_bytes(s->type);
    props.app_id = amqp_cstring_bytes(s->app_id);
    amqp_bytes_t exchange = amqp_cstring_bytes(s->exchange);
    amqp_bytes_t routing_key = amqp_cstring_bytes(s->routing_key);
    amqp_bytes_t body = {s->body_length, (void *)s->body};
    ring->lowest_unsettled = 1;

    while (!atomic_load_explicit(stop, memory_order_relaxed)) {
        amqp_maybe_release_buffers(conn);
        amqp_frame_t frame;
        struct timeval timeout = {0, 100000};
        int status = amqp_simple_wait_frame_noblock(conn, &frame, &timeout);
        if (status == AMQP_STATUS_TIMEOUT) continue;
        if (status != AMQP_STATUS_OK) return fail(stats, "reading a frame", amqp_error_string2(status));
        if (frame.frame_type != AMQP_FRAME_METHOD) continue;
        switch (frame.payload.method.id) {
        case AMQP_BASIC_DELIVER_METHOD: {
            uint64_t tag = ((amqp_basic_deliver_t *)frame.payload.method.decoded)->delivery_tag;
            amqp_message_t command;
            amqp_rpc_reply_t read = amqp_read_message(conn, frame.channel, &command, 0);
            if (read.reply_type != AMQP_RESPONSE_NORMAL) return fail(stats, "reading a command", "its content did not follow");
            props._flags &= ~(amqp_flags_t)AMQP_BASIC_CORRELATION_ID_FLAG;
            if (command.properties._flags & AMQP_BASIC_CORRELATION_ID_FLAG) {
                props._flags |= AMQP_BASIC_CORRELATION_ID_FLAG;
                props.correlation_id = command.properties.correlation_id;
            }
            props.timestamp = (uint64_t)time(NULL);
            // A command that names its reply-to address (direct reply-to, as the tenants mode's
            // probes do) gets its reply there alone, through the default exchange, as the worker
            // sends a sender its copy; the others to the configured exchange.
            int direct = (command.properties._flags & AMQP_BASIC_REPLY_TO_FLAG) && command.properties.reply_to.len > 0;
            int published = amqp_basic_publish(conn, PUBLISH_CHANNEL, direct ? amqp_empty_bytes : exchange,
                                               direct ? command.properties.reply_to : routing_key, 0, 0, &props, body);
            amqp_destroy_message(&command);
            if (published != AMQP_STATUS_OK) return fail(stats, "publishing a reply", amqp_error_string2(published));
            ring->published += 1;
            ring->delivery_tags[ring->published % RING] = tag;
            ring->confirmed[ring->published % RING] = 0;
            break;
        }
        case AMQP_BASIC_ACK_METHOD: {
            amqp_basic_ack_t *ack = frame.payload.method.decoded;
            uint64_t from = ack->multiple ? ring->lowest_unsettled : ack->delivery_tag;
            for (uint64_t sequence = from; sequence <= ack->delivery_tag; sequence++) ring->confirmed[sequence % RING] = 1;
            uint64_t before = ring->lowest_unsettled;
            while (ring->lowest_unsettled <= ring->published && ring->confirmed[ring->lowest_unsettled % RING]) {
                ring->lowest_unsettled += 1;
            }
            if (ring->lowest_unsettled == before) break;
            uint64_t settled_tag = ring->delivery_tags[(ring->lowest_unsettled - 1) % RING];
            int acked = amqp_basic_ack(conn, CONSUME_CHANNEL, settled_tag, 1);
            if (acked != AMQP_STATUS_OK) return fail(stats, "acknowledging commands", amqp_error_string2(acked));
            stats->relayed += ring->lowest_unsettled - before;
            break;
        }
        case AMQP_BASIC_NACK_METHOD:
            return fail(stats, "publishing a reply", "the broker nacked it");
        case AMQP_CHANNEL_CLOSE_METHOD:
            return fail(stats, "relaying", "the broker closed a channel");
        case AMQP_CONNECTION_CLOSE_METHOD:
            return fail(stats, "relaying", "the broker closed the connection");
        default:
            break;
        }
    }
    return 0;
}

static int relay_run(const cw_relay_settings *s, const atomic_int *stop, cw_relay_stats *stats) {
    memset(stats, 0, sizeof *stats);
    amqp_connection_state_t conn = amqp_new_connection();
    if (!conn) return fail(stats, "connecting", "out of memory");
    int result = -1;
    amqp_socket_t *socket = amqp_tcp_socket_new(conn);
    struct timeval connect_timeout = {10, 0};
    int opened = socket ? amqp_socket_open_noblock(socket, s->host, s->port, &connect_timeout) : AMQP_STATUS_NO_MEMORY;
    if (opened != AMQP_STATUS_OK) {
        fail(stats, "connecting", amqp_error_string2(opened));
        amqp_destroy_connection(conn);
        return -1;
    }
    struct timeval rpc_timeout = {5, 0};  // so closing cannot hang on a vanished broker
    amqp_set_rpc_timeout(conn, &rpc_timeout);
    amqp_rpc_reply_t login = amqp_login(conn, s->vhost, 0, AMQP_DEFAULT_FRAME_SIZE, 0, AMQP_SASL_METHOD_PLAIN, s->user, s->password);
    if (login.reply_type != AMQP_RESPONSE_NORMAL) {
        fail(stats, "logging in", "the broker refused the credentials or the virtual host");
        goto done;
    }
    amqp_channel_open(conn, CONSUME_CHANNEL);
    if (check_rpc(conn, stats, "opening the consumer channel")) goto done;
    amqp_channel_open(conn, PUBLISH_CHANNEL);
    if (check_rpc(conn, stats, "opening the publisher channel")) goto done;
    amqp_confirm_select(conn, PUBLISH_CHANNEL);
    if (check_rpc(conn, stats, "enabling publisher confirms")) goto done;
    amqp_basic_qos(conn, CONSUME_CHANNEL, 0, s->prefetch, 0);
    if (check_rpc(conn, stats, "setting the prefetch")) goto done;
    amqp_basic_consume(conn, CONSUME_CHANNEL, amqp_cstring_bytes(s->queue), amqp_empty_bytes, 0, 0, 0, amqp_empty_table);
    if (check_rpc(conn, stats, "consuming the command queue")) goto done;

    confirm_ring *ring = calloc(1, sizeof *ring);
    if (!ring) {
        fail(stats, "relaying", "out of memory");
        goto done;
    }
    uint64_t cpu_start = thread_cpu_nanoseconds();
    result = relay_loop(conn, s, stop, stats, ring);
    stats->cpu_nanoseconds = thread_cpu_nanoseconds() - cpu_start;
    free(ring);
done:
    amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(conn);
    return result;
}

int cw_relay_run(cw_relay *relay) { return relay_run(&relay->settings, &relay->stop, &relay->stats); }

void cw_relay_stop(cw_relay *relay) { atomic_store(&relay->stop, 1); }

uint64_t cw_relay_relayed(const cw_relay *relay) { return relay->stats.relayed; }

uint64_t cw_relay_cpu_nanoseconds(const cw_relay *relay) { return relay->stats.cpu_nanoseconds; }

const char *cw_relay_error(const cw_relay *relay) { return relay->stats.error; }

void cw_relay_free(cw_relay *relay) {
    if (!relay) return;
    cw_relay_settings *s = &relay->settings;
    char *strings[] = {s->host, s->user, s->password, s->vhost, s->queue, s->exchange, s->routing_key,
                       s->type, s->content_type, s->app_id, s->idempotency_key};
    for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++) free(strings[i]);
    free(s->body);
    free(relay);
}

cw_relay *cw_relay_new(const char *host, int port, const char *user, const char *password, const char *vhost,
                       const char *queue, uint16_t prefetch, const char *exchange, const char *routing_key,
                       const void *body, size_t body_length, const char *type, const char *content_type,
                       const char *app_id, const char *idempotency_key) {
    cw_relay *relay = calloc(1, sizeof *relay);
    if (!relay) return NULL;
    atomic_init(&relay->stop, 0);
    cw_relay_settings *s = &relay->settings;
    s->host = strdup(host);
    s->port = port;
    s->user = strdup(user);
    s->password = strdup(password);
    s->vhost = strdup(vhost);
    s->queue = strdup(queue);
    s->prefetch = prefetch;
    s->exchange = strdup(exchange);
    s->routing_key = strdup(routing_key);
    s->body = malloc(body_length ? body_length : 1);
    if (s->body && body_length) memcpy(s->body, body, body_length);
    s->body_length = body_length;
    s->type = strdup(type);
    s->content_type = strdup(content_type);
    s->app_id = strdup(app_id);
    s->idempotency_key = idempotency_key ? strdup(idempotency_key) : NULL;
    if (!s->host || !s->user || !s->password || !s->vhost || !s->queue || !s->exchange || !s->routing_key || !s->body ||
        !s->type || !s->content_type || !s->app_id || (idempotency_key && !s->idempotency_key)) {
        cw_relay_free(relay);
        return NULL;
    }
    return relay;
}
