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

#endif
