#ifndef CUSTOMER_WORKER_CRABBITMQ_SHIM_H
#define CUSTOMER_WORKER_CRABBITMQ_SHIM_H

#include <sys/types.h>

// rabbitmq-c 0.12+ installs its headers under <rabbitmq-c/...>; 0.11 (Debian 12) at the top level.
#if __has_include(<rabbitmq-c/amqp.h>)
#include <rabbitmq-c/amqp.h>
#include <rabbitmq-c/framing.h>
#include <rabbitmq-c/tcp_socket.h>
#include <rabbitmq-c/ssl_socket.h>
#else
#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>
#include <amqp_ssl_socket.h>
#endif

/// `amqp_login_with_properties` is variadic, which Swift cannot call: this fixes its
/// arguments to PLAIN authentication with a user name and password.
static inline amqp_rpc_reply_t cw_amqp_login_plain(amqp_connection_state_t state,
                                                   char const *vhost, int channel_max,
                                                   int frame_max, int heartbeat,
                                                   const amqp_table_t *client_properties,
                                                   char const *user, char const *password) {
    return amqp_login_with_properties(state, vhost, channel_max, frame_max, heartbeat,
                                      client_properties, AMQP_SASL_METHOD_PLAIN, user, password);
}

/// The same with EXTERNAL authentication (client certificate over TLS).
static inline amqp_rpc_reply_t cw_amqp_login_external(amqp_connection_state_t state,
                                                      char const *vhost, int channel_max,
                                                      int frame_max, int heartbeat,
                                                      const amqp_table_t *client_properties,
                                                      char const *identity) {
    return amqp_login_with_properties(state, vhost, channel_max, frame_max, heartbeat,
                                      client_properties, AMQP_SASL_METHOD_EXTERNAL, identity);
}

// Method ids and property flags are cast or shift macros that Swift does not import; these
// constants re-export them so the Swift side never hard-codes protocol numbers.
static const amqp_method_number_t CW_BASIC_DELIVER = AMQP_BASIC_DELIVER_METHOD;
static const amqp_method_number_t CW_BASIC_RETURN = AMQP_BASIC_RETURN_METHOD;
static const amqp_method_number_t CW_BASIC_ACK = AMQP_BASIC_ACK_METHOD;
static const amqp_method_number_t CW_BASIC_NACK = AMQP_BASIC_NACK_METHOD;
static const amqp_method_number_t CW_BASIC_CANCEL = AMQP_BASIC_CANCEL_METHOD;
static const amqp_method_number_t CW_CHANNEL_CLOSE = AMQP_CHANNEL_CLOSE_METHOD;
static const amqp_method_number_t CW_CHANNEL_CLOSE_OK = AMQP_CHANNEL_CLOSE_OK_METHOD;
static const amqp_method_number_t CW_CONNECTION_CLOSE = AMQP_CONNECTION_CLOSE_METHOD;
static const amqp_method_number_t CW_CONNECTION_CLOSE_OK = AMQP_CONNECTION_CLOSE_OK_METHOD;
static const amqp_method_number_t CW_CONNECTION_BLOCKED = AMQP_CONNECTION_BLOCKED_METHOD;
static const amqp_method_number_t CW_CONNECTION_UNBLOCKED = AMQP_CONNECTION_UNBLOCKED_METHOD;

static const amqp_method_number_t CW_BASIC_PUBLISH = AMQP_BASIC_PUBLISH_METHOD;

static const amqp_flags_t CW_FLAG_CONTENT_TYPE = AMQP_BASIC_CONTENT_TYPE_FLAG;
static const amqp_flags_t CW_FLAG_CONTENT_ENCODING = AMQP_BASIC_CONTENT_ENCODING_FLAG;
static const amqp_flags_t CW_FLAG_HEADERS = AMQP_BASIC_HEADERS_FLAG;
static const amqp_flags_t CW_FLAG_DELIVERY_MODE = AMQP_BASIC_DELIVERY_MODE_FLAG;
static const amqp_flags_t CW_FLAG_PRIORITY = AMQP_BASIC_PRIORITY_FLAG;
static const amqp_flags_t CW_FLAG_CORRELATION_ID = AMQP_BASIC_CORRELATION_ID_FLAG;
static const amqp_flags_t CW_FLAG_REPLY_TO = AMQP_BASIC_REPLY_TO_FLAG;
static const amqp_flags_t CW_FLAG_EXPIRATION = AMQP_BASIC_EXPIRATION_FLAG;
static const amqp_flags_t CW_FLAG_MESSAGE_ID = AMQP_BASIC_MESSAGE_ID_FLAG;
static const amqp_flags_t CW_FLAG_TIMESTAMP = AMQP_BASIC_TIMESTAMP_FLAG;
static const amqp_flags_t CW_FLAG_TYPE = AMQP_BASIC_TYPE_FLAG;
static const amqp_flags_t CW_FLAG_USER_ID = AMQP_BASIC_USER_ID_FLAG;
static const amqp_flags_t CW_FLAG_APP_ID = AMQP_BASIC_APP_ID_FLAG;

// One write of already-encoded frames through the connection's socket, TCP or TLS alike, so a
// batch of publishes costs one system call (one per TLS record) instead of one per frame.
// rabbitmq-c exports no raw write: `amqp_socket_t` is a pointer to its v-table, whose first
// entry is `send`. The layout below is that of its private amqp_socket.h, identical in every
// release from 0.11 to 0.15; `cw_amqp_socket_layout_is_known` says whether the library linked
// at run time is one of them.
struct cw_amqp_socket_class {
    ssize_t (*send)(void *, const void *, size_t, int);
};
struct cw_amqp_socket {
    const struct cw_amqp_socket_class *klass;
};

/// rabbitmq-c's private statuses for a non-blocking socket that must wait (amqp_private.h).
static const int CW_STATUS_SOCKET_NEEDREAD = -0x1301;
static const int CW_STATUS_SOCKET_NEEDWRITE = -0x1302;

static inline int cw_amqp_socket_layout_is_known(void) {
    uint32_t version = amqp_version_number();  // 0xMMmmpp00
    uint32_t major = version >> 24, minor = (version >> 16) & 0xff;
    return major == 0 && minor >= 11 && minor <= 15;
}

/// Bytes written (possibly fewer than `length`), or a negative status: CW_STATUS_SOCKET_NEED*
/// to wait for the socket and try again with the same bytes, else the connection is broken.
static inline ssize_t cw_amqp_socket_send(amqp_connection_state_t state, const void *bytes, size_t length) {
    amqp_socket_t *socket = amqp_get_socket(state);
    if (socket == NULL) return AMQP_STATUS_SOCKET_CLOSED;
    return ((const struct cw_amqp_socket *)socket)->klass->send(socket, bytes, length, 0 /* AMQP_SF_NONE */);
}

#endif
