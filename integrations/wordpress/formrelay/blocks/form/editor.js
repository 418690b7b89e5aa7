/* formrelay block, editor side: no build step (wp.element.createElement). The preview is built from the
 * relay's description of the form, fetched by WordPress (GET /wp-json/formrelay/v1/preview). */
( function ( wp ) {
	'use strict';

	var el = wp.element.createElement;
	var useState = wp.element.useState;
	var useEffect = wp.element.useEffect;
	var __ = wp.i18n.__;
	var blockEditor = wp.blockEditor;
	var components = wp.components;
	var INPUT_TYPES = [ 'email', 'tel', 'number', 'date' ];

	/* The relay's description of the form, asked for half a second after the last keystroke. */
	function usePreview( form, relay ) {
		var state = useState( null );
		var preview = state[ 0 ];
		var setPreview = state[ 1 ];
		useEffect(
			function () {
				if ( ! form ) {
					setPreview( null );
					return undefined;
				}
				var live = true;
				setPreview( { status: 'loading' } );
				var timer = setTimeout( function () {
					var query = { form: form };
					if ( relay ) {
						query.relay = relay;
					}
					wp.apiFetch( { path: wp.url.addQueryArgs( '/formrelay/v1/preview', query ) } ).then(
						function ( answer ) {
							if ( live ) {
								setPreview( answer );
							}
						},
						function ( error ) {
							if ( live ) {
								setPreview( {
									status: 'error',
									message: ( error && error.message ) || __( 'The preview could not be loaded.', 'formrelay' )
								} );
							}
						}
					);
				}, 500 );
				return function () {
					live = false;
					clearTimeout( timer );
				};
			},
			[ form, relay ]
		);
		return preview;
	}

	function label( field, forId ) {
		return el( 'label', { htmlFor: forId, key: 'label' }, field.label, field.required ? el( 'span', { className: 'formrelay-preview-required', 'aria-hidden': 'true' }, ' *' ) : null );
	}

	function previewField( field, index ) {
		var id = 'formrelay-preview-' + index;
		var body;
		if ( ( field.type === 'radio' || field.type === 'checkbox' ) && field.options.length ) {
			body = el(
				'fieldset',
				{},
				el( 'legend', {}, field.label ),
				field.options.map( function ( option, i ) {
					return el( 'label', { key: i, className: 'formrelay-preview-choice' }, el( 'input', { type: field.type, disabled: true } ), ' ', option );
				} )
			);
		} else if ( field.type === 'checkbox' ) {
			body = el( 'label', { className: 'formrelay-preview-choice' }, el( 'input', { type: 'checkbox', disabled: true } ), ' ', field.label );
		} else if ( field.type === 'textarea' ) {
			body = [ label( field, id ), el( 'textarea', { id: id, disabled: true, key: 'input' } ) ];
		} else if ( field.options.length ) {
			body = [
				label( field, id ),
				el( 'select', { id: id, disabled: true, key: 'input' }, field.options.map( function ( option, i ) {
					return el( 'option', { key: i }, option );
				} ) )
			];
		} else {
			body = [ label( field, id ), el( 'input', { id: id, type: INPUT_TYPES.indexOf( field.type ) >= 0 ? field.type : 'text', disabled: true, key: 'input' } ) ];
		}
		return el( 'div', { className: 'formrelay-preview-field', key: field.name + index }, body );
	}

	function Preview( props ) {
		var preview = props.preview;
		var attributes = props.attributes;
		if ( ! preview ) {
			return null;
		}
		if ( preview.status === 'loading' ) {
			return el( components.Spinner );
		}
		if ( preview.status !== 'ok' ) {
			return el( 'div', { className: 'formrelay-preview-problem', role: 'note' }, el( components.Notice, { status: preview.status === 'unknown' ? 'warning' : 'error', isDismissible: false }, preview.message ) );
		}
		return el(
			'div',
			{ className: 'formrelay-preview' },
			attributes.showTitle ? el( 'h2', { className: 'formrelay-preview-title' }, preview.title ) : null,
			preview.fields.map( previewField ),
			el( 'button', { type: 'button', disabled: true, className: 'formrelay-preview-submit' }, attributes.submitText || preview.submit || __( 'Send', 'formrelay' ) ),
			el( 'p', { className: 'formrelay-preview-note' }, __( 'Preview: visitors get this form from the relay, in their own language.', 'formrelay' ) )
		);
	}

	function Edit( props ) {
		var attributes = props.attributes;
		var set = props.setAttributes;
		var preview = usePreview( attributes.form, attributes.relay );
		function onChange( name ) {
			return function ( value ) {
				var change = {};
				change[ name ] = value;
				set( change );
			};
		}
		var formField = function ( extra ) {
			return el( components.TextControl, Object.assign( {
				label: __( 'Form name on the relay', 'formrelay' ),
				help: __( 'The last part of the form’s address on the relay: join for /v1/forms/join.', 'formrelay' ),
				value: attributes.form,
				onChange: function ( value ) {
					set( { form: value.trim() } );
				}
			}, extra || {} ) );
		};
		var inspector = el(
			blockEditor.InspectorControls,
			{},
			el(
				components.PanelBody,
				{ title: __( 'Form', 'formrelay' ) },
				formField(),
				el( components.ToggleControl, { label: __( 'Show the form’s title', 'formrelay' ), checked: attributes.showTitle, onChange: onChange( 'showTitle' ) } ),
				el( components.ToggleControl, {
					label: __( 'Go to the thank-you page set on the relay', 'formrelay' ),
					help: __( 'Off: the page stays and shows the thank-you message.', 'formrelay' ),
					checked: attributes.redirect,
					onChange: onChange( 'redirect' )
				} ),
				el( components.TextControl, { label: __( 'Button text', 'formrelay' ), help: __( 'Empty: the relay’s, in the visitor’s language.', 'formrelay' ), value: attributes.submitText, onChange: onChange( 'submitText' ) } ),
				el( components.TextControl, { label: __( 'Thank-you message', 'formrelay' ), help: __( 'Empty: the relay’s, in the visitor’s language.', 'formrelay' ), value: attributes.deliveredText, onChange: onChange( 'deliveredText' ) } )
			),
			el(
				components.PanelBody,
				{ title: __( 'Advanced', 'formrelay' ), initialOpen: false },
				el( components.TextControl, {
					label: __( 'Another relay', 'formrelay' ),
					help: __( 'Empty: the site’s relay. Another relay must first be allowed in Settings → formrelay.', 'formrelay' ),
					type: 'url',
					value: attributes.relay,
					onChange: function ( value ) {
						set( { relay: value.trim() } );
					}
				} ),
				el( components.TextControl, { label: __( 'Page for visitors without JavaScript', 'formrelay' ), type: 'url', value: attributes.noscriptUrl, onChange: onChange( 'noscriptUrl' ) } )
			)
		);
		var body = attributes.form
			? el( Preview, { preview: preview, attributes: attributes } )
			: el( components.Placeholder, { icon: 'feedback', label: __( 'formrelay form', 'formrelay' ), instructions: __( 'Type the name of a form your relay knows, for example join.', 'formrelay' ) }, formField( { help: undefined } ) );
		return el( 'div', blockEditor.useBlockProps( { className: 'formrelay-embed' } ), inspector, body );
	}

	wp.blocks.registerBlockType( 'formrelay/form', {
		edit: Edit,
		save: function () {
			return null;
		}
	} );
}( window.wp ) );
