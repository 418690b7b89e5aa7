<?php
/**
 * GET /wp-json/formrelay/v1/preview?form=join[&relay=...]: the block editor's live preview.
 *
 * WordPress asks the relay (so the editor needs no CORS entry for wp-admin), only relays an administrator
 * chose, and hands back only what a preview shows; never the relay's raw answer.
 *
 * @package formrelay
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

function formrelay_register_rest_routes() {
	register_rest_route(
		'formrelay/v1',
		'/preview',
		array(
			'methods'             => 'GET',
			'callback'            => 'formrelay_rest_preview',
			'permission_callback' => function () {
				return current_user_can( 'edit_posts' );
			},
			'args'                => array(
				'form'  => array(
					'type'     => 'string',
					'required' => true,
				),
				'relay' => array(
					'type'    => 'string',
					'default' => '',
				),
			),
		)
	);
}

/**
 * The preview: {status: "ok", title, fields, submit} or {status: "unknown"|"error"|"invalid", message}.
 *
 * @param WP_REST_Request $request The request.
 * @return WP_REST_Response
 */
function formrelay_rest_preview( $request ) {
	$slug = trim( (string) $request['form'] );
	if ( ! formrelay_valid_slug( $slug ) ) {
		return rest_ensure_response(
			array(
				'status'  => 'invalid',
				/* translators: %s: what was given as the form's name. */
				'message' => sprintf( __( '“%s” cannot be the name of a form: use letters, digits, dots, dashes and underscores.', 'formrelay' ), formrelay_clip( $slug ) ),
			)
		);
	}
	$relay = formrelay_choose_relay( (string) $request['relay'] );
	if ( is_wp_error( $relay ) ) {
		return rest_ensure_response(
			array(
				'status'  => 'invalid',
				'message' => $relay->get_error_message(),
			)
		);
	}
	$result = formrelay_describe( $relay, $slug, 5 );
	formrelay_remember( $relay, $slug, $result );
	if ( 'ok' !== $result['status'] ) {
		$result = array(
			'status'  => $result['status'],
			'message' => formrelay_explain( $result, $relay, $slug ),
		);
	}
	return rest_ensure_response( $result );
}
