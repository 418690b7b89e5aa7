<?php
/**
 * Translations: the plugin's own catalogues for the languages the relay speaks, for any regional variant.
 *
 * WordPress looks for a file named after the exact locale (formrelay-fr_CA.mo), so a plugin that ships
 * fr_FR alone leaves Canadian, Belgian and Swiss French sites in English. Here any locale of a shipped
 * language gets that language's catalogue; a site's own translation in wp-content/languages/plugins wins.
 *
 * @package formrelay
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

/**
 * The shipped catalogue for each language, by its language code.
 */
const FORMRELAY_CATALOGUES = array(
	'fr' => 'fr_FR',
	'es' => 'es_ES',
	'de' => 'de_DE',
	'pt' => 'pt_BR',
	'nl' => 'nl_NL',
);

/**
 * The shipped catalogue that serves a locale (fr_CA -> fr_FR, de_DE_formal -> de_DE), or null (English).
 *
 * @param string $locale A WordPress locale.
 * @return string|null
 */
function formrelay_catalogue_for( $locale ) {
	$language = strtolower( (string) strtok( (string) $locale, '_-' ) );
	return isset( FORMRELAY_CATALOGUES[ $language ] ) ? FORMRELAY_CATALOGUES[ $language ] : null;
}

/**
 * Load the plugin's strings in a locale (the request's by default), replacing any loaded before.
 *
 * @param string|null $locale A WordPress locale; null for the request's.
 * @return bool Whether a catalogue was loaded (false for English).
 */
function formrelay_load_textdomain( $locale = null ) {
	$locale = is_string( $locale ) && '' !== $locale ? $locale : determine_locale();
	unload_textdomain( 'formrelay' );
	$own = WP_LANG_DIR . '/plugins/formrelay-' . $locale . '.mo';
	if ( is_readable( $own ) && load_textdomain( 'formrelay', $own ) ) {
		return true;
	}
	$catalogue = formrelay_catalogue_for( $locale );
	return null !== $catalogue && load_textdomain( 'formrelay', FORMRELAY_DIR . 'languages/formrelay-' . $catalogue . '.mo' );
}

/**
 * Run a function with the plugin's strings in the current user's language (an editor's own choice in
 * their profile), then go back to the request's.
 *
 * @param callable $render What to run.
 * @return mixed What it returned.
 */
function formrelay_in_user_locale( $render ) {
	$request = determine_locale();
	$user    = get_user_locale();
	if ( $user === $request ) {
		return $render();
	}
	formrelay_load_textdomain( $user );
	try {
		return $render();
	} finally {
		formrelay_load_textdomain( $request );
	}
}

/**
 * The block editor script's translations: the bundled JSON for the language when the exact locale has none.
 *
 * @param string|false $file   The file WordPress would read.
 * @param string       $handle The script handle.
 * @param string       $domain The text domain.
 * @return string|false
 */
function formrelay_script_translation_file( $file, $handle, $domain ) {
	if ( 'formrelay' !== $domain || ( is_string( $file ) && is_readable( $file ) ) ) {
		return $file;
	}
	$catalogue = formrelay_catalogue_for( determine_locale() );
	if ( null === $catalogue ) {
		return $file;
	}
	$bundled = FORMRELAY_DIR . 'languages/formrelay-' . $catalogue . '-' . $handle . '.json';
	return is_readable( $bundled ) ? $bundled : $file;
}
