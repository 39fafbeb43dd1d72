#ifndef CUSTOMER_WORKER_CRABBITMQ_SHIM_H
#define CUSTOMER_WORKER_CRABBITMQ_SHIM_H

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

#endif
