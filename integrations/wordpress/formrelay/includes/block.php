<?php
/**
 * The formrelay/form block: block.json, an editor script with no build step, rendered on the server
 * into the same markup as the shortcode.
 *
 * @package formrelay
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

function formrelay_register_block() {
	$base = plugins_url( 'blocks/form/', FORMRELAY_FILE );
	wp_register_script(
		'formrelay-block-editor',
		$base . 'editor.js',
		array( 'wp-blocks', 'wp-element', 'wp-block-editor', 'wp-components', 'wp-i18n', 'wp-api-fetch', 'wp-url' ),
		FORMRELAY_VERSION,
		true
	);
	wp_set_script_translations( 'formrelay-block-editor', 'formrelay', FORMRELAY_DIR . 'languages' );
	wp_register_style( 'formrelay-block-editor', $base . 'editor.css', array(), FORMRELAY_VERSION );
	register_block_type( FORMRELAY_DIR . 'blocks/form', array( 'render_callback' => 'formrelay_render_block' ) );
}

/**
 * The block on the page: the shortcode's markup, in the block's wrapper (its class names and alignment).
 *
 * @param array $attributes The block's attributes (block.json).
 * @return string
 */
function formrelay_render_block( $attributes ) {
	$attributes = is_array( $attributes ) ? $attributes : array();
	$text       = function ( $key ) use ( $attributes ) {
		return isset( $attributes[ $key ] ) && is_string( $attributes[ $key ] ) ? $attributes[ $key ] : '';
	};
	return formrelay_embed(
		array(
			'form'         => $text( 'form' ),
			'relay'        => $text( 'relay' ),
			'redirect'     => ! isset( $attributes['redirect'] ) || false !== $attributes['redirect'],
			'title'        => ! isset( $attributes['showTitle'] ) || false !== $attributes['showTitle'],
			'attribution'  => $text( 'attribution' ),
			'noscript_url' => $text( 'noscriptUrl' ),
			'texts'        => array(
				'submit'    => $text( 'submitText' ),
				'delivered' => $text( 'deliveredText' ),
			),
			'wrapper'      => get_block_wrapper_attributes( array( 'class' => 'formrelay-embed' ) ),
		)
	);
}
