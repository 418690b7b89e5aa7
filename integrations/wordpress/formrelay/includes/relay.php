<?php
/**
 * The relay: which addresses are accepted, and what it says about a form (GET /v1/forms/<slug>).
 *
 * @package formrelay
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

/** Bytes read from the relay's answer at most: a description is a few kilobytes. */
const FORMRELAY_MAX_ANSWER_BYTES = 262144;

/** Fields and characters kept from a description for the editor's preview. */
const FORMRELAY_MAX_FIELDS = 200;
const FORMRELAY_MAX_TEXT   = 500;

/** How long a check made for an editor is reused for the next editor's page view. */
const FORMRELAY_RECHECK_SECONDS = 60;

/**
 * The site's relay, as saved in Settings -> formrelay ('' when none).
 *
 * @return string
 */
function formrelay_relay_url() {
	$url = get_option( 'formrelay_relay_url', '' );
	return is_string( $url ) ? $url : '';
}

/**
 * The other relays an administrator allowed for relay="..." in shortcodes and blocks.
 *
 * @return string[]
 */
function formrelay_other_relays() {
	$relays = get_option( 'formrelay_other_relays', array() );
	return is_array( $relays ) ? array_values( array_filter( $relays, 'is_string' ) ) : array();
}

/**
 * A relay address in its one written form (lower-case scheme and host, no trailing slash), or why not.
 *
 * Accepted: https:// anywhere, and http:// on this machine only (localhost, 127.0.0.1, [::1]), since a
 * supporter's details must never cross the internet in clear. A path is allowed (a relay behind /relay).
 *
 * @param mixed $url What was typed.
 * @return string|WP_Error
 */
function formrelay_normalize_relay_url( $url ) {
	$url = is_string( $url ) ? trim( $url ) : '';
	/* translators: %s: what was typed in the relay address field. */
	$not_url = sprintf( __( '“%s” is not a web address. Use the address of your relay, such as https://relay.example.org.', 'formrelay' ), $url );
	if ( '' === $url || strlen( $url ) > 2000 || preg_match( '/[\s<>"\'\\\\]/', $url ) ) {
		return new WP_Error( 'formrelay_not_url', $not_url );
	}
	$parts = wp_parse_url( $url );
	if ( ! is_array( $parts ) || empty( $parts['scheme'] ) ) {
		return new WP_Error( 'formrelay_not_url', $not_url );
	}
	$scheme = strtolower( $parts['scheme'] );
	$host   = isset( $parts['host'] ) ? strtolower( $parts['host'] ) : '';
	$local  = in_array( $host, array( 'localhost', '127.0.0.1', '[::1]' ), true );
	if ( ! ( 'https' === $scheme || ( 'http' === $scheme && $local ) ) ) {
		return new WP_Error(
			'formrelay_scheme',
			__( 'The relay’s address must start with https:// (http:// is accepted only for localhost and 127.0.0.1, for testing).', 'formrelay' )
		);
	}
	if ( '' === $host || ! preg_match( '/^(\[[0-9a-f:.]+\]|[a-z0-9]([a-z0-9.-]*[a-z0-9])?)$/', $host ) ) {
		return new WP_Error( 'formrelay_not_url', $not_url );
	}
	if ( isset( $parts['user'] ) || isset( $parts['pass'] ) || isset( $parts['query'] ) || isset( $parts['fragment'] ) ) {
		return new WP_Error(
			'formrelay_parts',
			__( 'The relay’s address must not contain a user name, a password, a query (?) or a fragment (#).', 'formrelay' )
		);
	}
	$path = isset( $parts['path'] ) ? rtrim( $parts['path'], '/' ) : '';
	if ( preg_match( '#/(v1/forms/[^/]*|static/formrelay\.js)$#', $path ) ) {
		return new WP_Error(
			'formrelay_path',
			__( 'Give the relay’s own address, without /v1/forms/… or /static/formrelay.js at the end.', 'formrelay' )
		);
	}
	if ( '' !== $path && ! preg_match( '#^(/[A-Za-z0-9._~%!$&()*+,;=:@-]+)+$#', $path ) ) {
		return new WP_Error( 'formrelay_not_url', $not_url );
	}
	$port = isset( $parts['port'] ) ? ':' . (int) $parts['port'] : '';
	return $scheme . '://' . $host . $port . $path;
}

/**
 * Whether a form name can be one (letters, digits, dot, dash, underscore; what a relay's TOML key holds).
 *
 * @param mixed $slug The form's name.
 * @return bool
 */
function formrelay_valid_slug( $slug ) {
	return is_string( $slug ) && 1 === preg_match( '/^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/', $slug );
}

/**
 * The form's address on a relay: its description (GET) and where it is sent (POST).
 *
 * @param string $relay A normalized relay address.
 * @param string $slug  A valid form name.
 * @return string
 */
function formrelay_form_url( $relay, $slug ) {
	return $relay . '/v1/forms/' . rawurlencode( $slug );
}

/**
 * Which relay a shortcode or block uses: the site's, or another one an administrator allowed.
 *
 * @param string $override What relay="..." said ('' for none).
 * @return string|WP_Error
 */
function formrelay_choose_relay( $override ) {
	$site = formrelay_relay_url();
	if ( '' === trim( (string) $override ) ) {
		if ( '' === $site ) {
			return new WP_Error( 'formrelay_no_relay', __( 'No relay address is set yet. An administrator can set it in Settings → formrelay.', 'formrelay' ) );
		}
		return $site;
	}
	$relay = formrelay_normalize_relay_url( $override );
	if ( is_wp_error( $relay ) ) {
		return $relay;
	}
	if ( $relay !== $site && ! in_array( $relay, formrelay_other_relays(), true ) ) {
		return new WP_Error(
			'formrelay_relay_not_allowed',
			/* translators: %s: a relay address. */
			sprintf( __( 'The relay %s is not one this site allows. An administrator can add it in Settings → formrelay.', 'formrelay' ), $relay )
		);
	}
	return $relay;
}

/**
 * Ask the relay about a form, server-side, with a bounded wait and a bounded read.
 *
 * @param string $relay   A normalized relay address.
 * @param string $slug    A valid form name.
 * @param int    $timeout Seconds to wait at most.
 * @return array 'status' is 'ok' (with 'title' and 'fields'), 'unknown' (the relay has no such form) or
 *               'error' (with 'why': 'unreachable', 'http' or 'answer', and 'detail'); formrelay_explain() words it.
 */
function formrelay_describe( $relay, $slug, $timeout = 5 ) {
	$response = wp_remote_get(
		formrelay_form_url( $relay, $slug ),
		array(
			'timeout'             => $timeout,
			'redirection'         => 0,
			'limit_response_size' => FORMRELAY_MAX_ANSWER_BYTES,
			'headers'             => array(
				'Accept'          => 'application/json',
				'Accept-Language' => str_replace( '_', '-', get_user_locale() ),
			),
			'user-agent'          => 'formrelay-wordpress/' . FORMRELAY_VERSION,
		)
	);
	if ( is_wp_error( $response ) ) {
		return array(
			'status' => 'error',
			'why'    => 'unreachable',
			'detail' => formrelay_clip( $response->get_error_message() ),
		);
	}
	$code = (int) wp_remote_retrieve_response_code( $response );
	if ( 404 === $code ) {
		return array( 'status' => 'unknown' );
	}
	if ( 200 !== $code ) {
		return array(
			'status' => 'error',
			'why'    => 'http',
			'detail' => (string) $code,
		);
	}
	$description = json_decode( wp_remote_retrieve_body( $response ), true );
	if ( ! is_array( $description ) || ! isset( $description['fields'] ) || ! is_array( $description['fields'] ) ) {
		return array(
			'status' => 'error',
			'why'    => 'answer',
			'detail' => '',
		);
	}
	return array(
		'status' => 'ok',
		'title'  => formrelay_clip( isset( $description['title'] ) ? $description['title'] : $slug ),
		'fields' => formrelay_preview_fields( $description['fields'] ),
		'submit' => isset( $description['texts']['submit'] ) ? formrelay_clip( $description['texts']['submit'] ) : '',
	);
}

/**
 * What a check found, in words for an editor or administrator (in the language loaded now).
 *
 * @param array  $result What formrelay_describe() returned.
 * @param string $relay  The relay asked.
 * @param string $slug   The form asked about.
 * @return string
 */
function formrelay_explain( array $result, $relay, $slug ) {
	if ( 'ok' === $result['status'] ) {
		$count = isset( $result['fields'] ) ? count( $result['fields'] ) : 0;
		return sprintf(
			/* translators: 1: a form's title, 2: a form name, 3: how many fields it has. */
			_n( 'The relay knows this form: “%1$s” (%2$s), with %3$d field.', 'The relay knows this form: “%1$s” (%2$s), with %3$d fields.', $count, 'formrelay' ),
			isset( $result['title'] ) ? $result['title'] : $slug,
			$slug,
			$count
		);
	}
	if ( 'unknown' === $result['status'] ) {
		/* translators: 1: a form name, 2: a relay address. */
		return sprintf( __( 'The relay at %2$s does not know a form named “%1$s”.', 'formrelay' ), $slug, $relay );
	}
	$why = isset( $result['why'] ) ? $result['why'] : '';
	if ( 'unreachable' === $why ) {
		/* translators: 1: a relay address, 2: the reason, such as "Connection refused". */
		return sprintf( __( 'The relay at %1$s could not be reached: %2$s', 'formrelay' ), $relay, $result['detail'] );
	}
	if ( 'http' === $why ) {
		/* translators: 1: a relay address, 2: an HTTP status code such as 503. */
		return sprintf( __( 'The relay at %1$s answered with HTTP status %2$s.', 'formrelay' ), $relay, $result['detail'] );
	}
	/* translators: %s: a relay address. */
	return sprintf( __( 'The answer from %s is not a form description. Is this the address of a formrelay relay?', 'formrelay' ), $relay );
}

/**
 * The fields of a description, reduced to what a preview shows and bounded.
 *
 * @param array $fields The description's fields.
 * @return array
 */
function formrelay_preview_fields( array $fields ) {
	$types = array( 'text', 'email', 'tel', 'textarea', 'select', 'radio', 'checkbox', 'number', 'date' );
	$kept  = array();
	foreach ( array_slice( $fields, 0, FORMRELAY_MAX_FIELDS ) as $field ) {
		if ( ! is_array( $field ) || ! isset( $field['name'] ) ) {
			continue;
		}
		$options = array();
		if ( isset( $field['options'] ) && is_array( $field['options'] ) ) {
			foreach ( array_slice( $field['options'], 0, FORMRELAY_MAX_FIELDS ) as $option ) {
				if ( is_array( $option ) && isset( $option['label'] ) ) {
					$options[] = formrelay_clip( $option['label'] );
				}
			}
		}
		$type   = isset( $field['type'] ) && in_array( $field['type'], $types, true ) ? $field['type'] : 'text';
		$kept[] = array(
			'name'     => formrelay_clip( $field['name'] ),
			'label'    => formrelay_clip( isset( $field['label'] ) ? $field['label'] : $field['name'] ),
			'type'     => $type,
			'required' => ! empty( $field['required'] ),
			'options'  => $options,
		);
	}
	return $kept;
}

/**
 * A string from an outsider, as text and at most FORMRELAY_MAX_TEXT characters.
 *
 * @param mixed $text Anything.
 * @return string
 */
function formrelay_clip( $text ) {
	$text = is_scalar( $text ) ? wp_strip_all_tags( (string) $text ) : '';
	return function_exists( 'mb_substr' ) ? mb_substr( $text, 0, FORMRELAY_MAX_TEXT ) : substr( $text, 0, FORMRELAY_MAX_TEXT );
}

/**
 * What the relay last said about a form, as remembered for visitors' pages ('' when never asked).
 *
 * Visitors never make WordPress call the relay (pages stay cacheable and fast); checks are made for
 * editors (viewing a page, the block's preview, testing the connection) and remembered for an hour: a
 * form the relay did not know then is left out of visitors' pages meanwhile. Afterwards visitors get the
 * form's element again, and the snippet says "This form could not be loaded." if it is still unknown.
 *
 * @param string $relay A relay address.
 * @param string $slug  A form name.
 * @return array{status: string, checked: int}|null
 */
function formrelay_remembered( $relay, $slug ) {
	$known = get_transient( formrelay_status_key( $relay, $slug ) );
	return is_array( $known ) && isset( $known['status'], $known['checked'] ) ? $known : null;
}

/**
 * Ask the relay about a form for an editor, reusing an answer younger than a minute, and remember it.
 *
 * @param string $relay   A relay address.
 * @param string $slug    A form name.
 * @param int    $timeout Seconds to wait at most.
 * @return array The result of formrelay_describe() (without fields when reused).
 */
function formrelay_check( $relay, $slug, $timeout = 3 ) {
	$known = formrelay_remembered( $relay, $slug );
	if ( null !== $known && time() - (int) $known['checked'] < FORMRELAY_RECHECK_SECONDS && isset( $known['result'] ) ) {
		return $known['result'];
	}
	$result = formrelay_describe( $relay, $slug, $timeout );
	formrelay_remember( $relay, $slug, $result );
	return $result;
}

/**
 * Remember what the relay said about a form (a failure to reach it only briefly).
 *
 * @param string $relay  A relay address.
 * @param string $slug   A form name.
 * @param array  $result What formrelay_describe() returned.
 */
function formrelay_remember( $relay, $slug, array $result ) {
	unset( $result['fields'] );
	set_transient(
		formrelay_status_key( $relay, $slug ),
		array(
			'status'  => $result['status'],
			'checked' => time(),
			'result'  => $result,
		),
		'error' === $result['status'] ? 5 * MINUTE_IN_SECONDS : HOUR_IN_SECONDS
	);
}

/**
 * The transient that remembers a form's status (uninstall.php removes every formrelay_ transient).
 *
 * @param string $relay A relay address.
 * @param string $slug  A form name.
 * @return string
 */
function formrelay_status_key( $relay, $slug ) {
	return 'formrelay_s_' . md5( $relay . '|' . $slug );
}
