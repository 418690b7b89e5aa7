<?php
/**
 * The markup a shortcode or a block puts on a page: the snippet's render mode, and the relay's script once.
 *
 * The page carries no form fields and no per-visitor value: the visitor's browser fetches the form's
 * description from the relay and builds the form, so the page can be cached like any other.
 *
 * @package formrelay
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

/**
 * The snippet's texts a page may replace (formrelay.js: data-formrelay-text-<key>, "_" written "-").
 */
const FORMRELAY_TEXTS = array( 'sending', 'delivered', 'queued', 'invalid', 'rate_limited', 'unavailable', 'rejected', 'network', 'error', 'submit', 'choose', 'load', 'required' );

/** Characters kept from a text given in a shortcode or block. */
const FORMRELAY_MAX_OPTION = 300;

function formrelay_register_shortcode() {
	add_shortcode( 'formrelay', 'formrelay_shortcode' );
}

/**
 * [formrelay form="join" relay="https://..." redirect="off" title="off" text_submit="Sign" ...]
 *
 * @param array|string $atts Shortcode attributes.
 * @return string
 */
function formrelay_shortcode( $atts ) {
	$defaults = array(
		'form'         => '',
		'relay'        => '',
		'redirect'     => 'on',
		'title'        => 'on',
		'attribution'  => '',
		'noscript_url' => '',
		'class'        => '',
	);
	foreach ( FORMRELAY_TEXTS as $key ) {
		$defaults[ 'text_' . $key ] = '';
	}
	$atts  = shortcode_atts( $defaults, is_array( $atts ) ? $atts : array(), 'formrelay' );
	$texts = array();
	foreach ( FORMRELAY_TEXTS as $key ) {
		$texts[ $key ] = $atts[ 'text_' . $key ];
	}
	return formrelay_embed(
		array(
			'form'         => $atts['form'],
			'relay'        => $atts['relay'],
			'redirect'     => formrelay_on( $atts['redirect'] ),
			'title'        => formrelay_on( $atts['title'] ),
			'attribution'  => $atts['attribution'],
			'noscript_url' => $atts['noscript_url'],
			'texts'        => $texts,
			'attributes'   => array( 'class' => trim( 'formrelay-embed ' . formrelay_classes( $atts['class'] ) ) ),
		)
	);
}

/**
 * "off", "no", "false" and "0" mean off; anything else on.
 *
 * @param mixed $value A shortcode attribute.
 * @return bool
 */
function formrelay_on( $value ) {
	if ( is_bool( $value ) ) {
		return $value;
	}
	return ! in_array( strtolower( trim( (string) $value ) ), array( 'off', 'no', 'false', '0' ), true );
}

/**
 * Class names given by an editor, each made safe.
 *
 * @param string $classes Space-separated class names.
 * @return string
 */
function formrelay_classes( $classes ) {
	$safe = array_filter( array_map( 'sanitize_html_class', preg_split( '/\s+/', (string) $classes ) ) );
	return implode( ' ', array_slice( $safe, 0, 10 ) );
}

/**
 * The markup for one form, shared by the shortcode and the block.
 *
 * For editors, a problem is said in words (in their own language); visitors get the form, or nothing at
 * all when the relay said it has no such form: never an error message or a broken form.
 *
 * @param array $options form, relay, redirect, title, attribution, noscript_url, texts, attributes (the
 *                       wrapper's HTML attributes, or 'wrapper' as a ready string from the block editor).
 * @return string
 */
function formrelay_embed( array $options ) {
	$editor = current_user_can( 'edit_posts' );
	$slug   = isset( $options['form'] ) && is_string( $options['form'] ) ? trim( $options['form'] ) : '';
	if ( ! formrelay_valid_slug( $slug ) ) {
		return $editor ? formrelay_notice(
			function () use ( $slug ) {
				return '' === $slug
					? __( 'Say which form to show, for example [formrelay form="join"], or type its name in the block’s settings.', 'formrelay' )
					/* translators: %s: what was given as the form's name. */
					: sprintf( __( '“%s” cannot be the name of a form: use letters, digits, dots, dashes and underscores.', 'formrelay' ), formrelay_clip( $slug ) );
			}
		) : '';
	}
	$relay = formrelay_choose_relay( isset( $options['relay'] ) ? $options['relay'] : '' );
	if ( is_wp_error( $relay ) ) {
		// The error's words were made in the request's language: make them again in the editor's.
		return $editor ? formrelay_notice(
			function () use ( $options ) {
				$again = formrelay_choose_relay( isset( $options['relay'] ) ? $options['relay'] : '' );
				return is_wp_error( $again ) ? $again->get_error_message() : '';
			}
		) : '';
	}

	$notice = '';
	if ( $editor ) {
		$result = formrelay_check( $relay, $slug );
		if ( 'ok' !== $result['status'] ) {
			$notice = formrelay_notice(
				function () use ( $result, $relay, $slug ) {
					return formrelay_explain( $result, $relay, $slug );
				}
			);
		}
		if ( 'unknown' === $result['status'] ) {
			return $notice;
		}
	} else {
		$known = formrelay_remembered( $relay, $slug );
		if ( null !== $known && 'unknown' === $known['status'] ) {
			return '';
		}
	}

	formrelay_enqueue_assets( $relay );
	return $notice . formrelay_markup( formrelay_form_url( $relay, $slug ), $options );
}

/**
 * The snippet's render-mode element: <div data-formrelay-form="..."> with the page's options, and a
 * <noscript> for visitors without JavaScript. Every value is escaped here.
 *
 * @param string $url     The form's address on the relay.
 * @param array  $options See formrelay_embed().
 * @return string
 */
function formrelay_markup( $url, array $options ) {
	$data = array( 'data-formrelay-form' => $url );
	if ( isset( $options['redirect'] ) && ! $options['redirect'] ) {
		$data['data-formrelay-redirect'] = 'off';
	}
	if ( isset( $options['title'] ) && ! $options['title'] ) {
		$data['data-formrelay-title'] = 'off';
	}
	$attribution = isset( $options['attribution'] ) ? strtolower( trim( (string) $options['attribution'] ) ) : '';
	if ( '' !== $attribution && preg_match( '/^[a-z0-9_-]{1,40}$/', $attribution ) ) {
		$data['data-formrelay-attribution'] = $attribution;
	}
	$texts = isset( $options['texts'] ) && is_array( $options['texts'] ) ? $options['texts'] : array();
	foreach ( FORMRELAY_TEXTS as $key ) {
		$text = isset( $texts[ $key ] ) && is_string( $texts[ $key ] ) ? sanitize_text_field( $texts[ $key ] ) : '';
		if ( '' !== $text ) {
			$data[ 'data-formrelay-text-' . str_replace( '_', '-', $key ) ] = formrelay_truncate( $text, FORMRELAY_MAX_OPTION );
		}
	}

	$html = '<div';
	if ( isset( $options['wrapper'] ) ) {
		$html .= ' ' . $options['wrapper']; // get_block_wrapper_attributes(): already escaped by WordPress.
	}
	$attributes = isset( $options['attributes'] ) && is_array( $options['attributes'] ) ? $options['attributes'] : array();
	foreach ( $attributes + $data as $name => $value ) {
		$value = 'data-formrelay-form' === $name ? esc_url( $value, array( 'http', 'https' ) ) : esc_attr( $value );
		$html .= ' ' . $name . '="' . $value . '"';
	}
	$html .= '><noscript><p class="formrelay-noscript">' . esc_html__( 'This form needs JavaScript.', 'formrelay' );
	$fallback = isset( $options['noscript_url'] ) ? esc_url( trim( (string) $options['noscript_url'] ), array( 'http', 'https' ) ) : '';
	if ( '' !== $fallback ) {
		$html .= ' <a href="' . $fallback . '">' . esc_html__( 'Open the form on its own page.', 'formrelay' ) . '</a>';
	}
	return $html . '</p></noscript></div>';
}

/**
 * At most $max characters of a string.
 *
 * @param string $text A string.
 * @param int    $max  Characters.
 * @return string
 */
function formrelay_truncate( $text, $max ) {
	return function_exists( 'mb_substr' ) ? mb_substr( $text, 0, $max ) : substr( $text, 0, $max );
}

/**
 * A message for editors only, in their own language, said plainly (no script, no style of its own).
 *
 * @param callable $words Makes the message (called with the editor's language loaded).
 * @return string
 */
function formrelay_notice( $words ) {
	return formrelay_in_user_locale(
		function () use ( $words ) {
			return '<div class="formrelay-notice" role="note"><p><strong>formrelay:</strong> ' . esc_html( $words() )
				. '</p><p class="formrelay-notice-who">' . esc_html__( 'Only people who can edit this site see this message; visitors see no error.', 'formrelay' )
				. '</p></div>';
		}
	);
}

/**
 * The relay's formrelay.js (deferred, in the footer) and stylesheet, once per page whatever the number of forms.
 *
 * One script serves every form on the page, whichever relay each one posts to (the form's own address
 * says where); two copies would each enhance every form and send it twice.
 *
 * @param string $relay The relay of the form being added.
 */
function formrelay_enqueue_assets( $relay ) {
	if ( ! wp_script_is( 'formrelay', 'registered' ) ) {
		$source = '' !== formrelay_relay_url() ? formrelay_relay_url() : $relay;
		// WordPress 6.3+ reads the strategy; older versions read a true value as "in the footer" and
		// formrelay_defer_before_6_3() adds the attribute.
		wp_register_script( 'formrelay', $source . '/static/formrelay.js', array(), null, array( 'in_footer' => true, 'strategy' => 'defer' ) ); // phpcs:ignore WordPress.WP.EnqueuedResourceParameters.MissingVersion -- the relay versions its own file.
		if ( '0' !== get_option( 'formrelay_stylesheet', '1' ) ) {
			wp_register_style( 'formrelay', $source . '/static/formrelay.css', array(), null ); // phpcs:ignore WordPress.WP.EnqueuedResourceParameters.MissingVersion
		}
	}
	wp_enqueue_script( 'formrelay' );
	if ( wp_style_is( 'formrelay', 'registered' ) ) {
		wp_enqueue_style( 'formrelay' );
	}
}

/**
 * Before WordPress 6.3 (no loading strategies), add "defer" to the relay's script tag.
 *
 * @param string $tag    The script tag.
 * @param string $handle Its handle.
 * @return string
 */
function formrelay_defer_before_6_3( $tag, $handle ) {
	if ( 'formrelay' !== $handle || version_compare( get_bloginfo( 'version' ), '6.3', '>=' ) || false !== strpos( $tag, ' defer' ) ) {
		return $tag;
	}
	return str_replace( '<script ', '<script defer ', $tag );
}
